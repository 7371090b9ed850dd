import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (pkg: string) => fileURLToPath(new URL(`./${pkg}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    // Unit tests run against the sources; end-to-end tests spawn the built programs.
    alias: {
      '@lifeboat/shared': src('shared'),
      '@lifeboat/agent': src('agent'),
      '@lifeboat/server': src('server'),
    },
  },
  test: {
    include: ['{shared,agent,server}/src/**/*.test.ts', 'test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});

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
    // End-to-end tests start real servers, agents and databases: run files one at a time on 2 cores.
    fileParallelism: false,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});

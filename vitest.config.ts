import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Unit tests run against the sources; end-to-end tests spawn the built programs.
    alias: [
      // Subpath imports (e.g. @lifeboat/shared/chunk-codec) keep worker threads and small tools light.
      { find: /^@lifeboat\/shared\/(.+)$/, replacement: fileURLToPath(new URL('./shared/src/$1.ts', import.meta.url)) },
      { find: /^@lifeboat\/(shared|agent|server)$/, replacement: fileURLToPath(new URL('./$1/src/index.ts', import.meta.url)) },
    ],
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

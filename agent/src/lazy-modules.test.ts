import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

/** What `lifeboat-agent run` imports before any job, built (the tests run after `tsc -b`). */
const AGENT_MODULES = ['agent.js', 'config.js', 'enroll.js', 'install.js', 'restore/extract.js', 'download.js'].map((m) => new URL(`../dist/${m}`, import.meta.url).href);

describe('the agent at rest', () => {
  it('holds no database client library until a job needs one', () => {
    // pg and mysql2 would stay in the heap (about 3.7 MB), which every full collection of a long job marks again.
    const script = `
      import { createRequire } from 'node:module';
      for (const m of ${JSON.stringify(AGENT_MODULES)}) await import(m);
      const cache = createRequire(import.meta.url).cache;
      console.log(JSON.stringify([...new Set(Object.keys(cache).map((k) => /node_modules\\/(pg|mysql2)\\//.exec(k)?.[1]).filter(Boolean))]));
    `;
    const loaded = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as string[];
    expect(loaded).toEqual([]);
  });
});

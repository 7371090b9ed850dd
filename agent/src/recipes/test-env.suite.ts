import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createLogger, LifeboatError } from '@lifeboat/shared';
import type { JobContext } from '../sources/source.js';
import type { ExpandOptions } from './index.js';

/** A job context that keeps warnings and log lines for assertions. */
export function recipeTestContext(jobId = 'job_test'): { ctx: JobContext; warnings: string[]; logs: string[] } {
  const warnings: string[] = [];
  const logs: string[] = [];
  const ctx: JobContext = {
    jobId,
    signal: new AbortController().signal,
    log: createLogger('test', { level: 'debug', write: (line) => logs.push(line) }),
    warn: (message) => warnings.push(message),
    progress: () => {},
  };
  return { ctx, warnings, logs };
}

/** Options for expandRecipe in tests: secrets in a temp dir, no database lookups unless given. */
export function testOptions(secretsDir: string, extra: ExpandOptions = {}): ExpandOptions {
  return {
    secretsDir,
    civicrmDirectorySettings: async () => new Map(),
    now: () => new Date('2025-03-04T05:06:07Z'),
    // Every name resolves but those ending in ".unresolvable" (no DNS in tests).
    resolves: async (host) => !host.endsWith('.unresolvable'),
    // As on a machine without a local MySQL server, unless a test says otherwise.
    localMysqlSocket: () => undefined,
    ...extra,
  };
}

/** Writes files (path → content) under a root, creating directories; a trailing "/" makes a directory. */
export function writeTree(root: string, tree: Record<string, string>): void {
  for (const [rel, content] of Object.entries(tree)) {
    const full = path.join(root, rel);
    if (rel.endsWith('/')) {
      mkdirSync(full, { recursive: true });
      continue;
    }
    mkdirSync(path.dirname(full), { recursive: true });
    writeFileSync(full, content);
  }
}

export async function failure(promise: Promise<unknown>): Promise<LifeboatError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof LifeboatError) return err;
    throw err;
  }
  throw new Error('expected a LifeboatError, got success');
}

import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Parser } from 'tar';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createLogger } from '@lifeboat/shared';
import type { JobContext } from '../sources/source.js';
import { archivePaths } from './tar-writer.js';

/**
 * A file changed between the walk's lstat and the open that reads it. The archiver reads a group's files right
 * after walking them, so the window is too short to hit from outside: the test changes the file from inside
 * openSync, just before the archiver opens it.
 */
const beforeOpen = vi.hoisted(() => ({ hook: null as ((p: string) => void) | null }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const openSync = ((p: fs.PathLike, ...rest: unknown[]) => {
    beforeOpen.hook?.(String(p));
    return (real.openSync as (...args: unknown[]) => number)(p, ...rest);
  }) as typeof real.openSync;
  return { ...real, default: { ...real, openSync }, openSync };
});

let base = '';
beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-race-'));
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

const ctx: JobContext = { jobId: 'job_test', signal: new AbortController().signal, log: createLogger('test', { write: () => {} }), warn: () => {}, progress: () => {} };

async function entriesOf(archive: Buffer): Promise<Map<string, { mode: number; size: number; content: string }>> {
  const headers = new Map<string, { mode: number; size: number; content: string }>();
  const parser = new Parser({
    onReadEntry: (entry) => {
      const parts: Buffer[] = [];
      entry.on('data', (d: Buffer) => parts.push(d));
      entry.on('end', () => headers.set(path.basename(entry.path), { mode: entry.mode! & 0o7777, size: entry.size, content: Buffer.concat(parts).toString() }));
    },
  });
  await new Promise<void>((resolve, reject) => {
    parser.on('end', resolve);
    parser.on('error', reject);
    parser.end(archive);
  });
  return headers;
}

describe('a small file changed between walk and read', () => {
  it('is described as it was opened, not as the walk saw it', async () => {
    const src = path.join(base, 'src');
    fs.mkdirSync(src);
    for (const name of ['a', 'b', 'c', 'd']) fs.writeFileSync(path.join(src, name), name.repeat(3000), { mode: 0o644 });
    beforeOpen.hook = (p) => {
      if (p === path.join(src, 'b')) fs.chmodSync(p, 0o600);
      // c outgrows the room planned for it: the group's buffer goes on in a new one.
      if (p === path.join(src, 'c')) fs.appendFileSync(p, 'c'.repeat(5000));
    };
    try {
      const archive = await archivePaths([src], [], ctx);
      const pieces: Buffer[] = [];
      for await (const piece of archive.pieces) if (Buffer.isBuffer(piece)) pieces.push(Buffer.from(piece));
      await archive.metadata;
      const entries = await entriesOf(Buffer.concat(pieces));
      expect(entries.get('a')).toEqual({ mode: 0o644, size: 3000, content: 'a'.repeat(3000) });
      expect(entries.get('b')).toEqual({ mode: 0o600, size: 3000, content: 'b'.repeat(3000) });
      expect(entries.get('c')).toEqual({ mode: 0o644, size: 8000, content: 'c'.repeat(8000) });
      expect(entries.get('d')).toEqual({ mode: 0o644, size: 3000, content: 'd'.repeat(3000) });
    } finally {
      beforeOpen.hook = null;
    }
  });
});

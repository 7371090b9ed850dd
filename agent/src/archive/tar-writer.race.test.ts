import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Parser } from 'tar';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createLogger } from '@lifeboat/shared';
import type { JobContext } from '../sources/source.js';
import { archivePaths } from './tar-writer.js';
import { takeAsUpload } from './upload-emulation.suite.js';

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

/** Every chunk the backups below made, by id: what a store would hold. */
const store = new Map<string, Buffer>();

/** One backup with a files cache, as the upload does it (takeAsUpload); the archive put back together. */
async function backUpCached(src: string, cacheFile: string): Promise<{ archive: Buffer; filesRead: number; filesReused: number }> {
  const archive = await archivePaths([src], [], { ...ctx, filesCache: { file: cacheFile, identity: 'race', absent: async () => new Set<string>(), log: ctx.log } });
  const { bytes } = await takeAsUpload(archive.pieces, store);
  await archive.metadata;
  await archive.settle(true);
  return { archive: bytes, ...archive.reads };
}

describe('a changed group whose unchanged files are kept from their chunk', () => {
  it('stays a valid archive when a file it reads vanishes or grows meanwhile, and is read again next time', async () => {
    const src = path.join(base, 'kept');
    fs.mkdirSync(src);
    for (const name of ['a', 'b', 'c', 'd', 'e']) fs.writeFileSync(path.join(src, name), name.repeat(3000));
    const cache = path.join(base, 'kept.cache');
    await backUpCached(src, cache);
    fs.appendFileSync(path.join(src, 'b'), 'B');
    fs.appendFileSync(path.join(src, 'd'), 'D');
    beforeOpen.hook = (p) => {
      if (p === path.join(src, 'b')) fs.rmSync(p);
      if (p === path.join(src, 'd')) fs.appendFileSync(p, 'd'.repeat(5000));
    };
    let second;
    try {
      second = await backUpCached(src, cache);
    } finally {
      beforeOpen.hook = null;
    }
    // a, c and e kept unread; b gone before it could be read, d read as it was when opened.
    expect(second.filesReused).toBe(3);
    const entries = await entriesOf(second.archive);
    expect([...entries.keys()].filter((n) => n.length === 1).sort()).toEqual(['a', 'c', 'd', 'e']);
    expect(entries.get('c')).toEqual({ mode: 0o644, size: 3000, content: 'c'.repeat(3000) });
    expect(entries.get('d')).toEqual({ mode: 0o644, size: 8001, content: 'd'.repeat(3000) + 'D' + 'd'.repeat(5000) });
    // The group was not recorded as it was archived (b missing from it): the next backup reads what changed.
    const third = await backUpCached(src, cache);
    expect(third.filesRead).toBeGreaterThan(0);
    expect(await entriesOf(third.archive)).toEqual(entries);
  });
});

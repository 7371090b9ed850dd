import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChunkUse } from '@lifeboat/shared';
import { fakeJobContext } from '../sources/test-context.suite.js';
import { KEEP_SLICES_MS, ManifestLine, manifestText, walkOrder } from './files-cache.js';
import { archivePaths } from './tar-writer.js';
import { takeAsUpload } from './upload-emulation.suite.js';

let base: string;
beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'lifeboat-files-cache-'));
});
afterAll(() => fs.rmSync(base, { recursive: true, force: true }));

/** Every chunk any backup of these tests made, by id: what a store would hold. */
const store = new Map<string, Buffer>();

interface Run {
  /** The archive's bytes, put back together from the chunks (reused ones from the "store"). */
  bytes: Buffer;
  chunks: ChunkUse[];
  filesRead: number;
  filesReused: number;
  warnings: string[];
}

/** One backup as the upload does it (takeAsUpload). `absent` plays the server's answer to the chunks query. */
async function backUp(paths: string[], cacheFile: string, options: { absent?: (ids: string[]) => Set<string>; identity?: string; stored?: boolean; now?: number } = {}): Promise<Run> {
  const t = fakeJobContext();
  const ctx = {
    ...t.ctx,
    filesCache: {
      file: cacheFile,
      identity: options.identity ?? 'test',
      absent: async (ids: string[]) => options.absent?.(ids) ?? new Set<string>(),
      log: t.ctx.log,
      ...(options.now !== undefined ? { now: () => options.now! } : {}),
    },
  };
  const archive = await archivePaths(paths, [], ctx);
  const { bytes, chunks } = await takeAsUpload(archive.pieces, store);
  await archive.metadata;
  await archive.settle(options.stored ?? true);
  return { bytes, chunks, ...archive.reads, warnings: t.warnings };
}

/** The archive of `src` as a backup without a files cache makes it: what every cached backup must equal. */
let uncached = 0;
async function readWithoutCache(src: string): Promise<Buffer> {
  return (await backUp([src], path.join(base, `uncached-${uncached++}.cache`))).bytes;
}

/** Plain bytes of the distinct chunks among `uses` that `earlier` did not list: what a backup added to the store. */
function bytesNotIn(earlier: Run, uses: readonly ChunkUse[]): number {
  const known = new Set(earlier.chunks.map((c) => c.id));
  const added = new Map(uses.filter((c) => !known.has(c.id)).map((c) => [c.id, c.size]));
  return [...added.values()].reduce((n, size) => n + size, 0);
}

/**
 * What `later`'s backup added for the tree: its new chunks before the last one (which ends the per-file manifest
 * and the archive, and is new whenever a line of the manifest is).
 */
function newBytes(earlier: Run, later: Run): number {
  return bytesNotIn(earlier, later.chunks.slice(0, -1));
}

/**
 * A directory at the same path in every run. Where groups of small files end depends on the entries' full paths
 * (a hash of each), so a tree under a random temp dir is grouped differently from run to run, and the keeping
 * rules (tar-writer.ts KEEP_ENTRIES) then read a group whole in some layouts: a test that counts the files read
 * needs the same layout each time.
 */
function layoutFixedDir(name: string): string {
  const dir = path.join(os.tmpdir(), `lifeboat-files-cache-layout-${name}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fixedDirs.push(dir);
  return dir;
}
const fixedDirs: string[] = [];
afterAll(() => {
  for (const dir of fixedDirs) fs.rmSync(dir, { recursive: true, force: true });
});

function tree(root: string): void {
  for (let d = 0; d < 20; d++) {
    const dir = path.join(root, `dir-${String(d).padStart(2, '0')}`);
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 50; f++) fs.writeFileSync(path.join(dir, `file-${f}.txt`), `${d}/${f} `.repeat(100 + f * 7));
  }
  fs.writeFileSync(path.join(root, 'large.bin'), Buffer.alloc(3 * 1024 * 1024, 7).map((_, i) => (i * 2654435761) >>> 24));
  fs.symlinkSync('large.bin', path.join(root, 'link'));
  fs.linkSync(path.join(root, 'large.bin'), path.join(root, 'large-again.bin'));
}

describe('files cache', () => {
  it('reuses every unchanged segment unread, and the archive is byte for byte the same', async () => {
    const src = path.join(base, 'same');
    tree(src);
    const cache = path.join(base, 'same.cache');
    const first = await backUp([src], cache);
    // 1000 small files and large.bin; large-again.bin is a hard link to it, and the link a symlink.
    expect(first.filesRead).toBe(1001);
    expect(first.filesReused).toBe(0);
    const second = await backUp([src], cache);
    expect(second.filesRead).toBe(0);
    expect(second.filesReused).toBe(1001);
    expect(second.bytes.equals(first.bytes)).toBe(true);
    expect(second.chunks).toEqual(first.chunks);
    expect(fs.statSync(cache).mode & 0o777).toBe(0o600);
  });

  it('reads only the segment of an edited file, and the result is what a full read gives', async () => {
    const src = path.join(base, 'edit');
    tree(src);
    const cache = path.join(base, 'edit.cache');
    await backUp([src], cache);
    fs.appendFileSync(path.join(src, 'dir-07', 'file-3.txt'), 'one more line\n');
    const edited = await backUp([src], cache);
    expect(edited.filesRead).toBeGreaterThan(0);
    // A group or two around it (a pax header, present when a file's mtime has milliseconds, moves group ends from
    // run to run), not the tree of 1001 files.
    expect(edited.filesRead).toBeLessThan(200);
    expect(edited.bytes.equals(await readWithoutCache(src))).toBe(true);
  });

  it('keeps the unchanged files of a changed group from the chunks that stored them, and stores only the changed ones', async () => {
    const src = layoutFixedDir('keep');
    tree(src);
    const cache = path.join(base, 'keep.cache');
    const first = await backUp([src], cache);
    const edit = (name: string, text: string) => fs.appendFileSync(path.join(src, 'dir-07', name), text);

    edit('file-3.txt', 'one more line\n');
    const second = await backUp([src], cache);
    // The edited file alone is read; its neighbours are slices of the chunk their group was stored in.
    expect(second.filesRead).toBe(1);
    expect(second.chunks.some((c) => c.offset !== undefined)).toBe(true);
    // New bytes: the file's header (and a pax header when its mtime has a fraction) and padded content, not its group (tens of KiB).
    expect(newBytes(first, second)).toBeLessThanOrEqual(4096);
    expect(second.bytes.equals(await readWithoutCache(src))).toBe(true);

    // Another file of the same group: slices of a list that already has slices.
    edit('file-5.txt', 'and another\n');
    const third = await backUp([src], cache);
    expect(third.filesRead).toBe(1);
    expect(newBytes(second, third)).toBeLessThanOrEqual(4096);
    expect(third.bytes.equals(await readWithoutCache(src))).toBe(true);

    // Unchanged now: every group reused whole, slices included, nothing read.
    const fourth = await backUp([src], cache);
    expect(fourth.filesRead).toBe(0);
    expect(fourth.chunks).toEqual(third.chunks);
    expect(fourth.bytes.equals(third.bytes)).toBe(true);

    // A new file between kept ones, and a removed one.
    fs.writeFileSync(path.join(src, 'dir-07', 'file-30a.txt'), 'new\n');
    fs.rmSync(path.join(src, 'dir-07', 'file-33.txt'));
    const fifth = await backUp([src], cache);
    expect(fifth.filesRead).toBe(1);
    const full = await readWithoutCache(src);
    expect(fifth.bytes.equals(full)).toBe(true);

    // A week on, nothing changed: the groups that keep slices are read and stored whole again, so the chunks
    // they kept from (with file-33's bytes in one) are no longer needed; the others are still reused unread.
    const week = Date.now() + KEEP_SLICES_MS + 60_000;
    const later = await backUp([src], cache, { now: week });
    expect(later.filesRead).toBeGreaterThan(1);
    expect(later.filesRead).toBeLessThan(200);
    expect(later.chunks.some((c) => c.offset !== undefined)).toBe(false);
    expect(later.bytes.equals(full)).toBe(true);
    expect((await backUp([src], cache, { now: week })).filesRead).toBe(0);
  });

  it('reads each kind of manifest line back to the same text (kept lines are the stored ones, written again)', () => {
    const lines = [
      { path: '/srv/a b/ü.txt', type: 'file', size: 12, sha256: 'ab'.repeat(32) },
      { path: '/srv/dir', type: 'directory' },
      { path: '/srv/link', type: 'symlink', target: '../x"y' },
      { path: '/srv/again', type: 'hardlink', target: '/srv/a b/ü.txt' },
    ] as const;
    for (const line of lines) expect(manifestText(ManifestLine.parse(JSON.parse(JSON.stringify(line))))).toBe(manifestText(line));
  });

  it('keeps the unchanged lines of the per-file manifest from the chunks that stored it', async () => {
    const src = layoutFixedDir('manifest');
    tree(src);
    const cache = path.join(base, 'manifest.cache');
    const first = await backUp([src], cache);
    // The manifest: a line of about 150 bytes for each of the 1 004 entries, every one with its file's SHA-256.
    for (const d of ['03', '11', '17']) fs.appendFileSync(path.join(src, `dir-${d}`, 'file-8.txt'), 'edited\n');
    const second = await backUp([src], cache);
    expect(second.filesRead).toBe(3);
    // The three files with their headers, the three changed lines, the manifest's header and the archive's end:
    // not the manifest's 150 KB again.
    expect(bytesNotIn(first, second.chunks)).toBeLessThan(16 * 1024);
    expect(second.bytes.equals(await readWithoutCache(src))).toBe(true);

    // Nothing changed: the manifest entry is the same chunk list, not even read back.
    const third = await backUp([src], cache);
    expect(third.chunks).toEqual(second.chunks);
    expect(third.bytes.equals(second.bytes)).toBe(true);

    // A file added and one removed: lines move, the rest is kept, and the bytes are still the tree's.
    fs.writeFileSync(path.join(src, 'dir-05', 'file-1a.txt'), 'new\n');
    fs.rmSync(path.join(src, 'dir-15', 'file-2.txt'));
    const fourth = await backUp([src], cache);
    expect(bytesNotIn(third, fourth.chunks)).toBeLessThan(16 * 1024);
    expect(fourth.bytes.equals(await readWithoutCache(src))).toBe(true);

    // When the store lost a chunk the manifest was kept from, it is written whole (and right).
    const manifestChunks = new Set(fourth.chunks.slice(-3).map((c) => c.id));
    const lost = await backUp([src], cache, { absent: (ids) => new Set(ids.filter((id) => manifestChunks.has(id))) });
    expect(lost.bytes.equals(fourth.bytes)).toBe(true);
    expect(lost.chunks.at(-1)!.offset).toBeUndefined();

    // A week on, the groups that kept slices since the second backup are read whole again, and the manifest keeps
    // nothing from the chunks of then: its slices are of the manifest `lost` wrote whole.
    const week = Date.now() + KEEP_SLICES_MS + 60_000;
    const later = await backUp([src], cache, { now: week });
    const writtenByLost = new Set(lost.chunks.filter((c) => c.offset === undefined && !fourth.chunks.some((f) => f.id === c.id)).map((c) => c.id));
    const sliced = later.chunks.filter((c) => c.offset !== undefined);
    expect(sliced.length).toBeGreaterThan(0);
    expect(sliced.every((c) => writtenByLost.has(c.id))).toBe(true);
    expect(later.bytes.equals(fourth.bytes)).toBe(true);
  });

  it('reuses a large file unread when its header comes to form a group alone (the file before it grew large)', async () => {
    const src = path.join(base, 'large-alone');
    fs.mkdirSync(src);
    for (let f = 0; f < 5; f++) fs.writeFileSync(path.join(src, `a-${f}.txt`), `small ${f}\n`.repeat(50));
    fs.writeFileSync(path.join(src, 'b.txt'), 'small b\n');
    fs.writeFileSync(path.join(src, 'z.bin'), Buffer.alloc(2 * 1024 * 1024, 9));
    const cache = path.join(base, 'large-alone.cache');
    await backUp([src], cache);
    // b.txt becomes a large file: its header ends the group, and z.bin's header is then a group of its own,
    // which starts where z.bin's own record does.
    fs.writeFileSync(path.join(src, 'b.txt'), Buffer.alloc(400 * 1024, 1));
    const after = await backUp([src], cache);
    expect(after.filesRead).toBe(1);
    expect(after.bytes.equals(await readWithoutCache(src))).toBe(true);
  });

  it('reads a changed group whole again rather than list it in many pieces', async () => {
    const src = path.join(base, 'fragments');
    tree(src);
    const cache = path.join(base, 'fragments.cache');
    await backUp([src], cache);
    // Every other file of a directory: kept and changed files alternate, more pieces than a group may have.
    for (let f = 0; f < 50; f += 2) fs.appendFileSync(path.join(src, 'dir-04', `file-${f}.txt`), 'x');
    const edited = await backUp([src], cache);
    expect(edited.filesRead).toBeGreaterThan(25);
    expect(edited.bytes.equals(await readWithoutCache(src))).toBe(true);
  });

  it('keeps the manifest lines of a group read whole that did not change', async () => {
    const src = layoutFixedDir('whole-group-lines');
    tree(src);
    const cache = path.join(base, 'whole-group-lines.cache');
    const first = await backUp([src], cache);
    // A file that grows to most of its group: keeping the others would keep under half of it, so it is read whole.
    fs.appendFileSync(path.join(src, 'dir-04', 'file-20.txt'), 'x'.repeat(120_000));
    const edited = await backUp([src], cache);
    expect(edited.filesRead).toBeGreaterThan(5);
    expect(edited.bytes.equals(await readWithoutCache(src))).toBe(true);
    // New chunks under 16 KiB are the manifest's (a group is at least 16 KiB): its header, the changed line and
    // the archive's end; the lines of the files read again but unchanged are kept.
    // (About 2.2 KB: 512 of header, the line, 1.5 KiB of end. With the unchanged lines of the group as new bytes
    // too, 3.7 KB.)
    expect(bytesNotIn(first, edited.chunks.filter((c) => c.size < 16 * 1024))).toBeLessThan(3072);
  });

  it('notices a change that keeps size and mtime (the ctime moves), and a metadata change', async () => {
    const src = path.join(base, 'sneaky');
    tree(src);
    const cache = path.join(base, 'sneaky.cache');
    await backUp([src], cache);
    const file = path.join(src, 'large.bin');
    const before = fs.statSync(file);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from('XX'), 0, 2, 1000);
    fs.closeSync(fd);
    fs.utimesSync(file, before.atime, before.mtime);
    fs.chmodSync(path.join(src, 'dir-03', 'file-1.txt'), 0o600);
    const changed = await backUp([src], cache);
    expect(changed.bytes.equals(await readWithoutCache(src))).toBe(true);
    expect(changed.filesRead).toBeGreaterThanOrEqual(2);
  });

  it('reads a segment again when the store no longer holds one of its chunks', async () => {
    const src = path.join(base, 'gone');
    tree(src);
    const cache = path.join(base, 'gone.cache');
    const first = await backUp([src], cache);
    const lost = first.chunks[3]!.id;
    let asked: string[] = [];
    const again = await backUp([src], cache, { absent: (ids) => ((asked = ids), new Set([lost])) });
    expect(asked).toContain(lost);
    expect(again.filesRead).toBeGreaterThan(0);
    expect(again.filesRead).toBeLessThan(200);
    expect(again.bytes.equals(first.bytes)).toBe(true);
  });

  it('ignores a cache for other paths or ids, a damaged one, and keeps the old one when the backup failed', async () => {
    const src = path.join(base, 'other');
    tree(src);
    const cache = path.join(base, 'other.cache');
    const first = await backUp([src], cache);
    expect((await backUp([src], cache, { identity: 'encrypted now' })).filesReused).toBe(0);
    // That run replaced the cache with one for "encrypted now"; a failed run must not replace it again.
    expect((await backUp([src], cache, { stored: false })).filesReused).toBe(0);
    expect((await backUp([src], cache, { identity: 'encrypted now' })).filesReused).toBe(1001);

    const text = fs.readFileSync(cache, 'utf8').split('\n');
    text[5] = '{"root": 0, "first": "damaged';
    fs.writeFileSync(cache, text.join('\n'));
    const damaged = await backUp([src], cache, { identity: 'encrypted now' });
    expect(damaged.bytes.equals(first.bytes)).toBe(true);
    expect(damaged.filesRead).toBeGreaterThan(0);
    expect(fs.readdirSync(base).filter((n) => n.includes('.new-'))).toEqual([]);
  });

  it('orders paths as the walk does: a directory before its contents, names by code unit', () => {
    expect(walkOrder(0, '/a', 0, '/a/b')).toBeLessThan(0);
    expect(walkOrder(0, '/a/z', 0, '/a-b')).toBeLessThan(0);
    expect(walkOrder(0, '/a-b', 0, '/a/z')).toBeGreaterThan(0);
    expect(walkOrder(1, '/a', 0, '/z')).toBeGreaterThan(0);
    expect(walkOrder(0, '/a/B', 0, '/a/a')).toBeLessThan(0);
    expect(walkOrder(0, '/x', 0, '/x')).toBe(0);
  });
});

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Header, Parser, type HeaderData } from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, LifeboatError, type FilesStepOptions } from '@lifeboat/shared';
import { archivePaths, MANIFEST_ENTRY_NAME, type ManifestLine } from '../archive/tar-writer.js';
import { DEFAULT_RESTORE_LIMITS, DIRECTORY_CACHE_IN_EFFECT, extractTar, FAST_FREE_PATH, PlacedPaths } from '../restore/extract.js';
import { createFilesSource, filesSource } from './files.js';
import type { JobContext, RestoreOptions } from './source.js';
import { collect } from './test-context.suite.js';

const isRoot = process.getuid?.() === 0;
let base = '';

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-files-'));
  // Traversable by other users: one test reads the tree as "nobody".
  fs.chmodSync(base, 0o755);
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

interface TestContext {
  ctx: JobContext;
  warnings: string[];
  progress: { phase: string; bytes: number; at: number }[];
}

function testContext(signal: AbortSignal = new AbortController().signal): TestContext {
  const warnings: string[] = [];
  const progress: TestContext['progress'] = [];
  const ctx: JobContext = {
    jobId: 'job_test',
    signal,
    log: createLogger('test', { write: () => {} }),
    warn: (message) => warnings.push(message),
    progress: (phase, bytes) => progress.push({ phase, bytes, at: Date.now() }),
  };
  return { ctx, warnings, progress };
}

function dir(name: string): string {
  const p = path.join(base, name);
  fs.mkdirSync(p, { recursive: true });
  return p;
}

/** Files this process holds open under a directory (the readdir's own fd is gone before it is read: skipped). */
function openFilesUnder(dirPath: string): string[] {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dirPath);
    } catch {
      return false;
    }
  });
}

function sparseFile(file: string, size: number): void {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
}


async function backup(options: Partial<FilesStepOptions> & { paths: string[] }, t = testContext()) {
  const artifact = await filesSource.backup({ exclude: [], ...options }, t.ctx);
  const archive = await collect(artifact.stream);
  return { archive, metadata: await artifact.metadata, ...t };
}

/** The archive fed in odd-sized pieces, so headers and bodies straddle chunk boundaries. */
function piecesOf(buffer: Buffer, size = 7001): Readable {
  const pieces: Buffer[] = [];
  for (let at = 0; at < buffer.length; at += size) pieces.push(buffer.subarray(at, at + size));
  return Readable.from(pieces);
}

async function restore(archive: Buffer, target: string, options: Partial<RestoreOptions & { force: boolean }> = {}, source = filesSource) {
  const t = testContext();
  const result = await source.restore(piecesOf(archive), { kind: 'dir', path: target, force: options.force ?? false }, { preserveOwner: options.preserveOwner ?? false }, t.ctx);
  return { ...result, ...t };
}

async function restoreError(archive: Buffer, target: string, source = filesSource): Promise<LifeboatError> {
  const err = await restore(archive, target, {}, source).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LifeboatError);
  return err as LifeboatError;
}

// ── a hand-made tar, for archives our backup would never write ──────────────────

function tarEntry(fields: HeaderData, body: Buffer = Buffer.alloc(0)): Buffer {
  const header = new Header({ mode: 0o644, uid: 0, gid: 0, mtime: new Date(1_600_000_000_000), size: body.length, ...fields });
  header.encode();
  const padding = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([header.block!, body, padding]);
}

function tarArchive(...entries: Buffer[]): Buffer {
  return Buffer.concat([...entries, Buffer.alloc(1024)]);
}

// ── a tree as the tests compare it ──────────────────────────────────────────────

interface EntryState {
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  size: number;
  sha256?: string;
  link?: string;
  ino: bigint;
}

function snapshot(root: string): Map<string, EntryState> {
  const out = new Map<string, EntryState>();
  const visit = (rel: string) => {
    const abs = rel ? path.join(root, rel) : root;
    const st = fs.lstatSync(abs, { bigint: true });
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
    const state: EntryState = { type, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtimeNs: st.mtimeNs, size: type === 'file' ? Number(st.size) : 0, ino: st.ino };
    if (type === 'file') state.sha256 = createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
    if (type === 'symlink') state.link = fs.readlinkSync(abs);
    out.set(rel, state);
    if (type === 'dir') for (const name of fs.readdirSync(abs)) visit(rel ? `${rel}/${name}` : name);
  };
  visit('');
  return out;
}

type Compared = Omit<EntryState, 'ino' | 'mtimeNs'> & { mtimeMs: bigint };

/** What the restore promises for an entry: everything, with the mtime cut to whole milliseconds. */
function expectedAfterRestore(state: EntryState): Compared {
  const { ino: _ino, mtimeNs, ...rest } = state;
  return { ...rest, mtimeMs: mtimeNs / 1_000_000n };
}

/** node-tar sets files' times through libuv, which truncates to whole microseconds via a double: .123 s may read .122999. */
function asRestored(state: EntryState): Compared {
  const { ino: _ino, mtimeNs, ...rest } = state;
  return { ...rest, mtimeMs: (mtimeNs + 1_000n) / 1_000_000n };
}

const DEEP = Array.from({ length: 6 }, (_, i) => `${'deep'.repeat(15)}-${i}`).join('/');
const LONG_NAME = `long-${'n'.repeat(150)}`;

/** Every kind of entry and attribute the round trip must keep. */
function buildTree(src: string): void {
  const file = (rel: string, content: string | Buffer, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(src, rel)), { recursive: true });
    fs.writeFileSync(path.join(src, rel), content);
    fs.chmodSync(path.join(src, rel), mode);
  };
  fs.mkdirSync(src, { recursive: true });
  file('a/b/c/file.txt', 'nested\n');
  fs.mkdirSync(path.join(src, 'empty'));
  file('plain.txt', 'plain\n');
  file('secret', 'secret\n', 0o600);
  file('script.sh', '#!/bin/sh\necho hi\n', 0o755);
  file('group-read', 'g\n', 0o640);
  file('world-writable', 'w\n', 0o777);
  file('empty-file', '');
  file('name with spaces', 'spaces\n');
  file('ünïcödé 名前.txt', 'unicode\n');
  file('new\nline', 'newline in the name\n');
  file('-rf', 'leading dash\n');
  file(LONG_NAME, 'long name\n');
  file(`${DEEP}/deep-file`, 'deep\n');
  file('binary.bin', Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 256)));
  file('hard1', 'hard link pair\n');
  fs.linkSync(path.join(src, 'hard1'), path.join(src, 'hard2'));
  fs.symlinkSync('a/b/c/file.txt', path.join(src, 'rel-link'));
  fs.symlinkSync('/etc/hostname', path.join(src, 'outside-link'));
  file('readonly/inside.txt', 'inside a read-only directory\n');
  fs.chmodSync(path.join(src, 'readonly'), 0o555);
  for (const [name, mode] of [['open', 0o777], ['sticky', 0o1777], ['shared', 0o2775]] as const) {
    fs.mkdirSync(path.join(src, name));
    fs.chmodSync(path.join(src, name), mode);
  }
  if (isRoot) {
    file('owned', 'owned by 1234:2345\n', 0o640);
    fs.chownSync(path.join(src, 'owned'), 1234, 2345);
    fs.chownSync(path.join(src, 'shared'), 1234, 2345);
    fs.chmodSync(path.join(src, 'shared'), 0o2775);
    fs.lchownSync(path.join(src, 'rel-link'), 1234, 2345);
    // A chown clears setgid: the restore must set the mode after the owner, as done here.
    file('setgid-file', 'setgid\n');
    fs.chownSync(path.join(src, 'setgid-file'), 1234, 2345);
    fs.chmodSync(path.join(src, 'setgid-file'), 0o2750);
  }
  // Times last, deepest first, so setting a child's never disturbs its parent's.
  const entries = [...snapshot(src).keys()].sort((a, b) => b.split('/').length - a.split('/').length);
  entries.forEach((rel, i) => {
    const abs = rel ? path.join(src, rel) : src;
    const seconds = rel === 'plain.txt' ? 1_500_000_000 : 1_600_000_000 + i + 0.123456;
    fs.lutimesSync(abs, seconds, seconds);
  });
}

describe('files source: round trip', () => {
  it('restores every entry with its content, type, mode, owner and mtime (to the millisecond)', async () => {
    const src = path.join(dir('roundtrip'), 'src');
    buildTree(src);
    const before = snapshot(src);
    const { archive, metadata, warnings } = await backup({ paths: [src] });
    expect(warnings).toEqual([]);

    const fileStates = [...before.values()].filter((s) => s.type === 'file');
    expect(metadata).toEqual({
      kind: 'files',
      paths: [src],
      entries: before.size,
      files: fileStates.length,
      directories: [...before.values()].filter((s) => s.type === 'dir').length,
      symlinks: 2,
      // The second name of the hard link carries no data.
      fileBytes: fileStates.reduce((sum, s) => sum + s.size, 0) - before.get('hard2')!.size,
      manifest: { entries: before.size, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) },
    });

    const target = path.join(base, 'roundtrip', 'restored');
    const result = await restore(archive, target, { preserveOwner: true });
    expect(result.skipped).toEqual([`${src.slice(1)}/outside-link: symbolic link to /etc/hostname points outside the restore target`]);
    expect(result.summary).toMatch(new RegExp(`^restored ${before.size - 1} entries \\(\\d+(\\.\\d+)? KiB\\) into ${target}$`));
    expect(fs.statSync(target).mode & 0o7777).toBe(0o755);
    // The backup's manifest is not part of the tree.
    expect(fs.readdirSync(target)).toEqual([src.split('/')[1]]);
    expect(fs.readdirSync(target, { recursive: true }).filter((name) => String(name).includes('lifeboat-manifest'))).toEqual([]);

    const after = snapshot(path.join(target, src));
    const expected = new Map([...before].filter(([rel]) => rel !== 'outside-link').map(([rel, s]) => [rel, expectedAfterRestore(s)]));
    expect(new Map([...after].map(([rel, s]) => [rel, asRestored(s)]))).toEqual(expected);
    for (const [rel, state] of after) {
      const archived = before.get(rel)!.mtimeNs / 1_000_000n;
      // Directories and symlinks (set by the restore itself) land exactly; files at most 1 µs below.
      const off = archived * 1_000_000n - state.mtimeNs;
      expect({ rel, off: state.type === 'file' ? off === 0n || off === 1_000n : off === 0n }).toEqual({ rel, off: true });
    }
    expect(after.get('hard1')!.ino).toBe(after.get('hard2')!.ino);
    // Fractional mtimes come back to the millisecond, whole seconds exactly.
    expect(after.get('plain.txt')!.mtimeNs).toBe(1_500_000_000_000_000_000n);
    expect(after.get('empty')!.mtimeNs % 1_000_000_000n).toBe(123_000_000n);
    if (isRoot) {
      expect(after.get('owned')).toMatchObject({ uid: 1234, gid: 2345, mode: 0o640 });
      expect(after.get('setgid-file')).toMatchObject({ uid: 1234, gid: 2345, mode: 0o2750 });
      expect(after.get('rel-link')).toMatchObject({ uid: 1234, gid: 2345 });
    }
  });

  it('keeps an mtime in the last half millisecond of a second in that second, cut to the millisecond', async () => {
    const src = dir('late-mtime');
    const file = path.join(src, 'late.bin');
    fs.writeFileSync(file, 'late');
    // node's Stats#mtime rounds to the nearest millisecond: 999.6 ms would be archived as the next whole second.
    fs.utimesSync(file, 1_700_000_000.9996, 1_700_000_000.9996);
    expect(fs.statSync(file).mtime.getTime() % 1000).toBe(0);
    const { archive } = await backup({ paths: [src] });
    const target = path.join(base, 'late-mtime-restored');
    await restore(archive, target);
    expect(fs.statSync(path.join(target, file)).mtimeMs).toBe(1_700_000_000_999);
  });

  it.runIf(isRoot)('restores as the restoring user when preserveOwner is false', async () => {
    const src = path.join(dir('owners'), 'src');
    buildTree(src);
    const { archive } = await backup({ paths: [src] });
    const target = path.join(base, 'owners', 'restored');
    await restore(archive, target, { preserveOwner: false });
    const after = snapshot(path.join(target, src));
    for (const [rel, state] of after) expect({ rel, uid: state.uid, gid: state.gid }).toEqual({ rel, uid: 0, gid: 0 });
    expect(after.get('setgid-file')!.mode).toBe(0o2750);
  });
});

describe('files source: backup', () => {
  it('leaves out what the exclude globs match, matched against absolute paths', async () => {
    const src = dir('exclude/src');
    for (const rel of ['keep.txt', 'drop.tmp', 'sub/.hidden.tmp', 'sub/keep2.txt', 'cache/x/y.bin', 'cache/z']) {
      fs.mkdirSync(path.dirname(path.join(src, rel)), { recursive: true });
      fs.writeFileSync(path.join(src, rel), rel);
    }
    const { archive, metadata } = await backup({ paths: [src], exclude: ['**/*.tmp', `${src}/cache/**`] });
    const target = path.join(base, 'exclude', 'restored');
    await restore(archive, target);
    expect([...snapshot(path.join(target, src)).keys()].sort()).toEqual(['', 'cache', 'keep.txt', 'sub', 'sub/keep2.txt']);
    expect(metadata).toMatchObject({ files: 2, directories: 3 });
  });

  it('fails with path_not_found before any data when a path is missing', async () => {
    const src = dir('missing');
    const t = testContext();
    const err = await filesSource.backup({ paths: [src, `${src}/nope`], exclude: [] }, t.ctx).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LifeboatError);
    expect(err).toMatchObject({ code: 'path_not_found', message: `path ${src}/nope does not exist on this agent (plan step files.paths)` });
    expect(t.progress).toEqual([]);
  });

  it('archives a symlinked path as a link and says so', async () => {
    const src = dir('symlinked-root');
    fs.symlinkSync('/etc', path.join(src, 'etc-link'));
    const { metadata, warnings } = await backup({ paths: [`${src}/etc-link`] });
    expect(metadata).toMatchObject({ entries: 1, symlinks: 1 });
    expect(warnings).toEqual([`path ${src}/etc-link is a symbolic link (to /etc): it is archived as a link, its target is not followed`]);
  });

  it('streams a large file in bounded pieces, with throttled progress', async () => {
    const src = dir('large');
    const size = 256 * 1024 * 1024;
    sparseFile(path.join(src, 'sparse.img'), size);
    const t = testContext();
    const started = Date.now();
    const artifact = await filesSource.backup({ paths: [src], exclude: [] }, t.ctx);
    let largestPiece = 0;
    let mostBuffered = 0;
    let total = 0;
    for await (const piece of artifact.stream as AsyncIterable<Buffer>) {
      largestPiece = Math.max(largestPiece, piece.length);
      mostBuffered = Math.max(mostBuffered, artifact.stream.readableLength);
      total += piece.length;
    }
    const metadata = await artifact.metadata;
    expect(metadata.fileBytes).toBe(size);
    expect(total).toBeGreaterThan(size);
    expect(largestPiece).toBeLessThanOrEqual(1024 * 1024);
    expect(mostBuffered).toBeLessThanOrEqual(2 * 1024 * 1024);
    const elapsed = Date.now() - started;
    expect(t.progress.length).toBeGreaterThan(0);
    expect(t.progress.length).toBeLessThanOrEqual(Math.ceil(elapsed / 250) + 2);
    expect(t.progress.at(-1)).toMatchObject({ phase: 'archiving', bytes: total });
  });

  it('stops and rejects its metadata when the job is cancelled', async () => {
    const src = dir('cancel');
    sparseFile(path.join(src, 'sparse.img'), 64 * 1024 * 1024);
    const controller = new AbortController();
    const artifact = await filesSource.backup({ paths: [src], exclude: [] }, testContext(controller.signal).ctx);
    const iterator = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    await iterator.next();
    controller.abort(new LifeboatError('cancelled', 'cancelled by the test'));
    await expect(artifact.metadata).rejects.toMatchObject({ code: 'cancelled', message: 'cancelled by the test' });
    expect(artifact.stream.destroyed).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(openFilesUnder(src)).toEqual([]);
  });

  it('warns about a file deleted or shrunk while the backup runs, and keeps going', async () => {
    const src = dir('vanish');
    const big = path.join(src, 'big');
    const MiB = 1024 * 1024;
    fs.writeFileSync(big, Buffer.alloc(8 * MiB, 1));
    fs.writeFileSync(path.join(src, 'z-vanishing'), 'soon gone');
    fs.writeFileSync(path.join(src, 'z-zz-stays'), 'stays');
    const t = testContext();
    const artifact = await filesSource.backup({ paths: [src], exclude: [] }, t.ctx);
    const iterator = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const pieces: Buffer[] = [];
    let received = 0;
    // The stream is pulled, so the walk runs at most about 2 MiB ahead of what was received: while 1.5 MiB
    // in, it is inside "big" (sorted first), has not read its last 2 MiB, and has not reached the others.
    let shrunk = false;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
      pieces.push(next.value as Buffer);
      received += (next.value as Buffer).length;
      if (!shrunk && received >= 1.5 * MiB) {
        fs.truncateSync(big, 6 * MiB);
        fs.unlinkSync(path.join(src, 'z-vanishing'));
        shrunk = true;
      }
    }
    const metadata = await artifact.metadata;
    expect(t.warnings).toEqual([
      `${big} shrank from ${8 * MiB} to ${6 * MiB} bytes while being read; the archived copy is padded with zeros`,
      `cannot read ${src}/z-vanishing: it was deleted during the backup (ENOENT)`,
    ]);
    expect(metadata).toMatchObject({ files: 2, directories: 1 });
    const target = path.join(base, 'vanish-restored');
    await restore(Buffer.concat(pieces), target);
    const restored = fs.readFileSync(path.join(target, big));
    expect(restored.length).toBe(8 * MiB);
    expect(restored.subarray(0, 6 * MiB).every((b) => b === 1)).toBe(true);
    expect(restored.subarray(6 * MiB).every((b) => b === 0)).toBe(true);
    expect(fs.readFileSync(path.join(target, src, 'z-zz-stays'), 'utf8')).toBe('stays');
  });

  it.runIf(isRoot)('warns about files it cannot read (running as "nobody") and archives the rest', async () => {
    const src = dir('unreadable');
    fs.chmodSync(src, 0o755);
    fs.writeFileSync(path.join(src, 'ok.txt'), 'readable');
    fs.writeFileSync(path.join(src, 'secret'), 'root only', { mode: 0o600 });
    fs.mkdirSync(path.join(src, 'closed'), { mode: 0o700 });
    fs.writeFileSync(path.join(src, 'closed', 'inner'), 'hidden');
    let result: Awaited<ReturnType<typeof backup>> | undefined;
    // Real permissions, no mock: this process reads the tree with the effective ids of "nobody".
    process.setegid(65534);
    process.seteuid(65534);
    try {
      result = await backup({ paths: [src] });
    } finally {
      process.seteuid(0);
      process.setegid(0);
    }
    if (!result) throw new Error('no backup result');
    expect(result.warnings.sort()).toEqual([
      `cannot read ${src}/closed: EACCES: permission denied (the directory is archived without its contents)`,
      `cannot read ${src}/secret: EACCES: permission denied`,
    ]);
    expect(result.metadata).toMatchObject({ entries: 3, files: 1, directories: 2 });
    const target = path.join(base, 'unreadable-restored');
    await restore(result.archive, target);
    expect([...snapshot(path.join(target, src)).keys()].sort()).toEqual(['', 'closed', 'ok.txt']);
  });

  it('skips, with a warning, a newline in a name too long to keep out of pax records', async () => {
    const src = dir('newline');
    fs.writeFileSync(path.join(src, `${'x'.repeat(120)}\nforged`), 'x');
    fs.writeFileSync(path.join(src, 'short\nname'), 'y');
    fs.utimesSync(path.join(src, 'short\nname'), 1_600_000_000.5, 1_600_000_000.5);
    const { archive, warnings } = await backup({ paths: [src] });
    expect(warnings).toEqual([`skipped ${JSON.stringify(`${src}/${'x'.repeat(120)}\nforged`)}: a name with a newline must be short and ASCII to be archived safely`]);
    const target = path.join(base, 'newline-restored');
    await restore(archive, target);
    const restored = fs.statSync(path.join(target, src, 'short\nname'));
    expect(restored.mtimeMs).toBe(1_600_000_000_500);
  });
});

// ── the per-file manifest ───────────────────────────────────────────────────────

/** The entry names of an archive, in order. */
async function entryNames(archive: Buffer): Promise<string[]> {
  const names: string[] = [];
  const parser = new Parser({ onReadEntry: (entry) => (names.push(entry.path), entry.resume()) });
  await new Promise<void>((resolve, reject) => {
    parser.on('end', resolve);
    parser.on('error', reject);
    parser.end(archive);
  });
  return names;
}

function readManifest(file: string): ManifestLine[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as ManifestLine);
}

/** A path's spool file, by the directory archivePaths reported. */
function spoolFile(spoolDir: string): string {
  return path.join(spoolDir, 'manifest.jsonl');
}

describe('files source: per-file manifest', () => {
  it('lists every archived entry with its type, size and SHA-256, as the last entry of the archive', async () => {
    const src = path.join(dir('manifest'), 'src');
    buildTree(src);
    // A user's own file of the manifest's name is a file like any other.
    fs.writeFileSync(path.join(src, '.lifeboat-manifest.jsonl'), 'not ours\n');
    const before = snapshot(src);
    const { archive, metadata } = await backup({ paths: [src] });
    const names = await entryNames(archive);
    expect(names.at(-1)).toBe(MANIFEST_ENTRY_NAME);
    expect(names.filter((name) => name === MANIFEST_ENTRY_NAME)).toHaveLength(1);
    expect(names).toContain(`${src.slice(1)}/.lifeboat-manifest.jsonl`);

    const kept = path.join(base, 'manifest', 'kept.jsonl');
    const target = path.join(base, 'manifest', 'restored');
    const t = testContext();
    await filesSource.restore(piecesOf(archive), { kind: 'dir', path: target, force: false }, { preserveOwner: false, keepManifestAt: kept }, t.ctx);
    expect(fs.statSync(kept).mode & 0o777).toBe(0o600);
    expect(createHash('sha256').update(fs.readFileSync(kept)).digest('hex')).toBe(metadata.manifest!.sha256);
    // Restored as the user's file, and the manifest kept outside the target only.
    expect(fs.readFileSync(path.join(target, src, '.lifeboat-manifest.jsonl'), 'utf8')).toBe('not ours\n');
    expect(fs.readdirSync(target)).toEqual([src.split('/')[1]]);

    const lines = readManifest(kept);
    expect(lines).toHaveLength(before.size);
    expect(metadata.manifest!.entries).toBe(before.size);
    const expected = new Map<string, ManifestLine>();
    for (const [rel, state] of before) {
      const p = rel ? `${src}/${rel}` : src;
      if (state.type === 'dir') expected.set(p, { path: p, type: 'directory' });
      else if (state.type === 'symlink') expected.set(p, { path: p, type: 'symlink', target: state.link! });
      else if (rel === 'hard2') expected.set(p, { path: p, type: 'hardlink', target: `${src}/hard1` });
      else expected.set(p, { path: p, type: 'file', size: state.size, sha256: state.sha256! });
    }
    expect(new Map(lines.map((line) => [line.path, line]))).toEqual(expected);
  });

  it('refuses to keep the manifest inside the restore target', async () => {
    const src = dir('manifest-inside/src');
    fs.writeFileSync(path.join(src, 'f'), 'f');
    const { archive } = await backup({ paths: [src] });
    const target = path.join(base, 'manifest-inside', 'target');
    const err = await filesSource
      .restore(piecesOf(archive), { kind: 'dir', path: target, force: false }, { preserveOwner: false, keepManifestAt: path.join(target, 'm.jsonl') }, testContext().ctx)
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'restore_failed', message: expect.stringMatching(/inside the restore target/) });
  });

  it('removes its spool directory when the backup succeeds, fails or is cancelled', async () => {
    const src = dir('manifest-spool');
    sparseFile(path.join(src, 'sparse.img'), 16 * 1024 * 1024);
    fs.writeFileSync(path.join(src, 'small'), 'small');

    // Success.
    const ok = await archivePaths([src], [], testContext().ctx);
    expect(fs.statSync(ok.manifestSpool).mode & 0o777).toBe(0o700);
    await collect(ok.stream);
    await ok.metadata;
    expect(fs.existsSync(ok.manifestSpool)).toBe(false);

    // Failure: the consumer (an upload) breaks the stream.
    const broken = await archivePaths([src], [], testContext().ctx);
    const pieces = (broken.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    await pieces.next();
    expect(fs.existsSync(broken.manifestSpool)).toBe(true);
    broken.stream.destroy(new Error('upload failed'));
    await expect(broken.metadata).rejects.toBeInstanceOf(LifeboatError);
    expect(fs.existsSync(broken.manifestSpool)).toBe(false);

    // Failure: everything was excluded (the walk ends without an entry).
    const empty = await archivePaths([src], ['**'], testContext().ctx);
    await expect(collect(empty.stream)).rejects.toThrow();
    await expect(empty.metadata).rejects.toMatchObject({ code: 'source_failed' });
    expect(fs.existsSync(empty.manifestSpool)).toBe(false);

    // Cancelled.
    const controller = new AbortController();
    const cancelled = await archivePaths([src], [], testContext(controller.signal).ctx);
    await (cancelled.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]().next();
    controller.abort(new LifeboatError('cancelled', 'cancelled by the test'));
    await expect(cancelled.metadata).rejects.toMatchObject({ code: 'cancelled' });
    expect(fs.existsSync(cancelled.manifestSpool)).toBe(false);
  });

  it('spools the manifest of 100k files to disk instead of holding it in memory', async () => {
    const src = dir('manifest-many');
    for (let d = 0; d < 100; d++) {
      const sub = path.join(src, `directory-${String(d).padStart(3, '0')}`);
      fs.mkdirSync(sub);
      for (let f = 0; f < 1000; f++) fs.writeFileSync(path.join(sub, `file-${String(f).padStart(4, '0')}.txt`), `${d}/${f}`);
    }
    const archive = await archivePaths([src], [], testContext().ctx);
    const spool = spoolFile(archive.manifestSpool);
    const heapBefore = process.memoryUsage().heapUsed;
    let heapPeak = heapBefore;
    let spooledPeak = 0;
    let bytes = 0;
    let sampledAt = 0;
    for await (const piece of archive.stream as AsyncIterable<Buffer>) {
      bytes += piece.length;
      // The stream hands over what it has buffered at each read: sample by bytes, not by pieces.
      if (bytes - sampledAt >= 1024 * 1024) {
        sampledAt = bytes;
        heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
        spooledPeak = Math.max(spooledPeak, fs.statSync(spool).size);
      }
    }
    const metadata = await archive.metadata;
    expect(metadata.manifest!.entries).toBe(100_101);
    // About 100 bytes a line: 10 MB of manifest, on disk while the walk ran (memory holds at most 64 KiB of it).
    expect(spooledPeak).toBeGreaterThan(8 * 1024 * 1024);
    expect(heapPeak - heapBefore).toBeLessThan(64 * 1024 * 1024);
    expect(fs.existsSync(archive.manifestSpool)).toBe(false);
  }, 180_000);
});

describe('files source: restore target', () => {
  it('refuses a non-empty target unless forced, and never writes through symlinks already there', async () => {
    const src = dir('target/src');
    fs.writeFileSync(path.join(src, 'file'), 'from the backup');
    const { archive } = await backup({ paths: [src] });

    const target = dir('target/existing');
    fs.writeFileSync(path.join(target, 'already-here'), 'keep me');
    await expect(restore(archive, target)).rejects.toMatchObject({
      code: 'restore_refused',
      message: `restore target ${target} is not empty; pass --force to restore into it anyway`,
    });
    const forced = await restore(archive, target, { force: true });
    expect(forced.skipped).toEqual([]);
    expect(fs.readFileSync(path.join(target, src, 'file'), 'utf8')).toBe('from the backup');
    expect(fs.readFileSync(path.join(target, 'already-here'), 'utf8')).toBe('keep me');

    // Symlinks planted in the target, pointing out of it, where the archive writes.
    const outside = dir('target/outside');
    fs.writeFileSync(path.join(outside, 'sentinel'), 'untouched');
    const planted = dir('target/planted');
    fs.symlinkSync(outside, path.join(planted, 'evil-dir'));
    fs.symlinkSync(path.join(outside, 'sentinel'), path.join(planted, 'evil-file'));
    const hostile = tarArchive(tarEntry({ path: 'evil-dir/pwned', type: 'File' }, Buffer.from('pwned')), tarEntry({ path: 'evil-file', type: 'File' }, Buffer.from('overwritten')));
    await restore(hostile, planted, { force: true });
    expect(fs.readdirSync(outside)).toEqual(['sentinel']);
    expect(fs.readFileSync(path.join(outside, 'sentinel'), 'utf8')).toBe('untouched');
    expect(fs.lstatSync(path.join(planted, 'evil-dir')).isDirectory()).toBe(true);
    expect(fs.readFileSync(path.join(planted, 'evil-file'), 'utf8')).toBe('overwritten');
  });

  it('refuses a target that is a file', async () => {
    const file = path.join(dir('target-file'), 'f');
    fs.writeFileSync(file, '');
    const err = await restoreError(tarArchive(tarEntry({ path: 'a', type: 'File' })), file);
    expect(err).toMatchObject({ code: 'restore_refused', message: `restore target ${file} exists and is not a directory` });
  });
});

describe('files source: restore failures', () => {
  async function archiveWithBigFile(name: string): Promise<{ src: string; archive: Buffer }> {
    const src = dir(name);
    fs.writeFileSync(path.join(src, 'big'), Buffer.alloc(8 * 1024 * 1024, 1));
    const { archive } = await backup({ paths: [src] });
    return { src, archive };
  }

  it('stops when the job is cancelled, with its reason, and leaves no file open', async () => {
    const { archive } = await archiveWithBigFile('cancel-restore/src');
    const controller = new AbortController();
    const input = new Readable({ read() {} });
    input.push(archive.subarray(0, 3 * 1024 * 1024));
    const target = path.join(base, 'cancel-restore', 'target');
    const restoring = filesSource.restore(input, { kind: 'dir', path: target, force: false }, { preserveOwner: false }, testContext(controller.signal).ctx);
    await new Promise((resolve) => setTimeout(resolve, 50));
    controller.abort(new LifeboatError('cancelled', 'cancelled by the test'));
    await expect(restoring).rejects.toMatchObject({ code: 'cancelled', message: 'cancelled by the test' });
    expect(input.destroyed).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(openFilesUnder(target)).toEqual([]);
  });

  it('fails with the error of an input that broke before the restore read it, and nothing else fails', async () => {
    const input = new Readable({ read() {} });
    input.destroy(new LifeboatError('integrity', 'the chunk list does not match'));
    const target = path.join(base, 'broken-early', 'target');
    const err = await filesSource.restore(input, { kind: 'dir', path: target, force: false }, { preserveOwner: false }, testContext().ctx).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'integrity', message: 'the chunk list does not match' });
  });

  it('fails with the error of the input when the download breaks', async () => {
    const { archive } = await archiveWithBigFile('broken-input/src');
    const input = new Readable({ read() {} });
    input.push(archive.subarray(0, 2 * 1024 * 1024));
    setTimeout(() => input.destroy(new LifeboatError('integrity', 'chunk abc does not match its id')), 20);
    const target = path.join(base, 'broken-input', 'target');
    const err = await filesSource.restore(input, { kind: 'dir', path: target, force: false }, { preserveOwner: false }, testContext().ctx).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'integrity', message: 'chunk abc does not match its id' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(openFilesUnder(target)).toEqual([]);
  });
});

describe('files source: hostile archives', () => {
  it('writes nothing outside the target and lists every refused entry with why', async () => {
    const root = dir('hostile');
    const outside = dir('hostile/outside-dir');
    const target = path.join(root, 'target');
    const passwd = fs.statSync('/etc/passwd');
    const archive = tarArchive(
      tarEntry({ path: 'sub/', type: 'Directory', mode: 0o755, size: 0 }),
      tarEntry({ path: '../escape', type: 'File' }, Buffer.from('escaped')),
      tarEntry({ path: `${root}/absolute`, type: 'File' }, Buffer.from('absolute')),
      tarEntry({ path: 'link', type: 'SymbolicLink', linkpath: outside, size: 0 }),
      tarEntry({ path: 'link/pwned', type: 'File' }, Buffer.from('through the link')),
      tarEntry({ path: 'up', type: 'SymbolicLink', linkpath: '../..', size: 0 }),
      tarEntry({ path: 'passwd', type: 'Link', linkpath: '/etc/passwd', size: 0 }),
      tarEntry({ path: 'passwd2', type: 'Link', linkpath: '../../etc/passwd', size: 0 }),
      tarEntry({ path: 'null', type: 'CharacterDevice', devmaj: 1, devmin: 3, size: 0 }),
      tarEntry({ path: 'disk', type: 'BlockDevice', devmaj: 8, devmin: 0, size: 0 }),
      tarEntry({ path: 'fifo', type: 'FIFO', size: 0 }),
      // Each link alone stays inside; followed through the first, the second leaves.
      tarEntry({ path: 'dot', type: 'SymbolicLink', linkpath: '.', size: 0 }),
      tarEntry({ path: 'sub/chain', type: 'SymbolicLink', linkpath: '../dot/..', size: 0 }),
      tarEntry({ path: 'inner', type: 'SymbolicLink', linkpath: 'sub', size: 0 }),
      tarEntry({ path: 'inner/x', type: 'File' }, Buffer.from('not through inner')),
      tarEntry({ path: 'abs-inside', type: 'SymbolicLink', linkpath: `${target}/sub`, size: 0 }),
      tarEntry({ path: './', type: 'SymbolicLink', linkpath: 'sub', size: 0 }),
      // Windows roots, which node-tar would strip (a drive, a share) rather than keep as names.
      tarEntry({ path: 'c:drive', type: 'File' }, Buffer.from('drive')),
      tarEntry({ path: '\\\\server\\share\\x', type: 'File' }, Buffer.from('share')),
      tarEntry({ path: 'winlink', type: 'SymbolicLink', linkpath: 'd:/x', size: 0 }),
      // An absolute path whose first name starts with a colon is no drive.
      tarEntry({ path: 'colon', type: 'SymbolicLink', linkpath: '/:x', size: 0 }),
      // Look-alikes that are plain names on Linux.
      tarEntry({ path: 'ab:c', type: 'File' }, Buffer.from('not a drive')),
      tarEntry({ path: 'x\\y', type: 'File' }, Buffer.from('a backslash')),
      tarEntry({ path: 'ok', type: 'File' }, Buffer.from('fine')),
    );
    const result = await restore(archive, target, { preserveOwner: true });
    expect(result.skipped).toEqual([
      "../escape: a path containing '..'",
      `${root}/absolute: an absolute path`,
      `link: symbolic link to ${outside} points outside the restore target`,
      'up: symbolic link to ../.. points outside the restore target',
      'passwd: hard link to /etc/passwd points outside the restore target',
      'passwd2: hard link to ../../etc/passwd points outside the restore target',
      'null: device files are not restored',
      'disk: device files are not restored',
      'fifo: FIFOs are not restored',
      'sub/chain: symbolic link to ../dot/.. points outside the restore target',
      './: an entry that would replace the restore target itself',
      'c:drive: a path that looks like a Windows drive or share',
      '\\\\server\\share\\x: a path that looks like a Windows drive or share',
      'winlink: symbolic link to d:/x looks like a Windows path',
      'colon: symbolic link to /:x points outside the restore target',
    ]);
    expect(result.warnings).toEqual(result.skipped.map((line) => `not restored: ${line}`));
    expect(fs.existsSync(path.join(root, 'escape'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'absolute'))).toBe(false);
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(fs.statSync('/etc/passwd')).toMatchObject({ nlink: passwd.nlink, size: passwd.size, mtimeMs: passwd.mtimeMs });
    expect(fs.readdirSync(target).sort()).toEqual(['ab:c', 'abs-inside', 'dot', 'inner', 'link', 'ok', 'sub', 'x\\y']);
    // "link" and "inner" were replaced by real directories: nothing is written through a symlink.
    expect(fs.lstatSync(path.join(target, 'link')).isDirectory()).toBe(true);
    expect(fs.readFileSync(path.join(target, 'link', 'pwned'), 'utf8')).toBe('through the link');
    expect(fs.lstatSync(path.join(target, 'inner')).isDirectory()).toBe(true);
    expect(fs.readdirSync(path.join(target, 'sub'))).toEqual([]);
    // An absolute target inside the restore target is kept, as a relative link (node-tar would strip its "/").
    expect(fs.readlinkSync(path.join(target, 'abs-inside'))).toBe('sub');
  });

  it('checks the parents again once a directory it made was replaced by a link (the directory cache)', async () => {
    // node-tar's own method is wrapped; an upgrade that renamed it must not silently drop the cache.
    expect(DIRECTORY_CACHE_IN_EFFECT).toBe(true);
    const target = path.join(dir('replaced-dir'), 'target');
    const archive = tarArchive(
      tarEntry({ path: 'kept/', type: 'Directory', mode: 0o755, size: 0 }),
      tarEntry({ path: 'e/', type: 'Directory', mode: 0o755, size: 0 }),
      tarEntry({ path: 'e', type: 'SymbolicLink', linkpath: 'kept', size: 0 }),
      tarEntry({ path: 'e/y', type: 'File' }, Buffer.from('not through the link')),
    );
    await restore(archive, target);
    expect(fs.readdirSync(path.join(target, 'kept'))).toEqual([]);
    expect(fs.lstatSync(path.join(target, 'e')).isDirectory()).toBe(true);
    expect(fs.readFileSync(path.join(target, 'e', 'y'), 'utf8')).toBe('not through the link');
  });

  it("replaces what an earlier entry of the archive made at the same path (free paths skip node-tar's check)", async () => {
    // node-tar's own methods are called; an upgrade that renamed them must not silently drop the fast path.
    expect(FAST_FREE_PATH).toBe(true);
    const target = path.join(dir('same-path'), 'target');
    const archive = tarArchive(
      tarEntry({ path: 'twice', type: 'File' }, Buffer.from('first')),
      tarEntry({ path: 'twice', type: 'File' }, Buffer.from('second')),
      tarEntry({ path: 'link-then-file', type: 'SymbolicLink', linkpath: '/etc/passwd', size: 0 }),
      tarEntry({ path: 'link-then-file', type: 'File' }, Buffer.from('a file now')),
    );
    await restore(archive, target);
    expect(fs.readFileSync(path.join(target, 'twice'), 'utf8')).toBe('second');
    expect(fs.lstatSync(path.join(target, 'link-then-file')).isFile()).toBe(true);
    expect(fs.readFileSync(path.join(target, 'link-then-file'), 'utf8')).toBe('a file now');
  });

  it('looks up only the paths an earlier entry took, in a target that was empty at the start', async () => {
    const archive = tarArchive(
      tarEntry({ path: 'd/', type: 'Directory', mode: 0o755, size: 0 }),
      tarEntry({ path: 'd/a', type: 'File' }, Buffer.from('a')),
      tarEntry({ path: 'd/b', type: 'File' }, Buffer.from('b')),
      tarEntry({ path: 'e/f/g', type: 'File' }, Buffer.from('g')),
      // Taken by an entry, and by a directory made above one: both looked up, and met as node-tar meets them.
      tarEntry({ path: 'd/a', type: 'File' }, Buffer.from('a again')),
      tarEntry({ path: 'e/f/', type: 'Directory', mode: 0o700, size: 0 }),
    );
    const extract = async (name: string, fresh: boolean) => {
      const target = dir(`looked-up/${name}`);
      const t = testContext();
      const extracted = await extractTar(piecesOf(archive), { root: target, path: target, fresh }, DEFAULT_RESTORE_LIMITS, { preserveOwner: false }, t.ctx);
      expect(fs.readFileSync(path.join(target, 'd', 'a'), 'utf8')).toBe('a again');
      expect(fs.readFileSync(path.join(target, 'e', 'f', 'g'), 'utf8')).toBe('g');
      expect(fs.statSync(path.join(target, 'e', 'f')).mode & 0o777).toBe(0o700);
      return extracted.pathsLookedUp;
    };
    // The first entry always goes node-tar's whole way (it checks the target itself then).
    expect(await extract('fresh', true)).toBe(3);
    expect(await extract('not-fresh', false)).toBe(6);
  });

  it('remembers the paths a restore placed, and the directories above them', () => {
    const placed = new PlacedPaths('/r');
    expect(placed.take('/r/a/b/c')).toBe(true);
    expect(placed.take('/r/a/b/c')).toBe(false);
    expect(placed.take('/r/a/b')).toBe(false);
    expect(placed.take('/r/a')).toBe(false);
    expect(placed.take('/r/a/x')).toBe(true);
    expect(placed.take('/r/ab')).toBe(true);
    expect(placed.take('/r/a/x')).toBe(false);
  });

  it('fails on an archive truncated inside an entry, at an entry boundary, or corrupt', async () => {
    const src = dir('truncated/src');
    fs.writeFileSync(path.join(src, 'a'), Buffer.alloc(100_000, 7));
    fs.writeFileSync(path.join(src, 'b'), 'b');
    const { archive } = await backup({ paths: [src] });
    const middle = await restoreError(archive.subarray(0, 60_000), path.join(base, 'truncated', 'middle'));
    expect(middle.code).toBe('restore_failed');
    // Cut inside an entry: node-tar reports the truncated entry, or the end-of-archive marker is missing.
    expect(middle.message).toMatch(/^the archive is truncated( or corrupt: Truncated input|: it ends without the end-of-archive marker)/);
    const boundary = await restoreError(archive.subarray(0, archive.length - 1024), path.join(base, 'truncated', 'boundary'));
    expect(boundary).toMatchObject({ code: 'restore_failed', message: 'the archive is truncated: it ends without the end-of-archive marker' });
    const corrupt = Buffer.from(archive);
    corrupt[10] = corrupt[10]! ^ 0xff;
    const bad = await restoreError(corrupt, path.join(base, 'truncated', 'corrupt'));
    expect(bad).toMatchObject({ code: 'restore_failed', message: 'the archive is truncated or corrupt: checksum failure' });
  });

  it('fails when the archive exceeds the entry, byte or depth limit', async () => {
    const many = tarArchive(...Array.from({ length: 5 }, (_, i) => tarEntry({ path: `f${i}`, type: 'File' })));
    const entries = await restoreError(many, path.join(base, 'limits', 'entries'), createFilesSource({ maxEntries: 3 }));
    expect(entries).toMatchObject({ code: 'restore_failed', message: 'the archive has more than 3 entries, the restore limit' });
    expect(fs.readdirSync(path.join(base, 'limits', 'entries')).length).toBeLessThanOrEqual(3);

    const big = tarArchive(tarEntry({ path: 'big', type: 'File' }, Buffer.alloc(4096)));
    const bytes = await restoreError(big, path.join(base, 'limits', 'bytes'), createFilesSource({ maxBytes: 1000 }));
    expect(bytes).toMatchObject({ code: 'restore_failed', message: 'the archive holds more than 1000 B, the restore limit' });
    expect(fs.readdirSync(path.join(base, 'limits', 'bytes'))).toEqual([]);

    const deep = tarArchive(tarEntry({ path: 'a/b/c/d/e', type: 'File' }));
    const depth = await restoreError(deep, path.join(base, 'limits', 'depth'), createFilesSource({ maxDepth: 4 }));
    expect(depth).toMatchObject({ code: 'restore_failed', message: 'entry a/b/c/d/e is 5 directories deep, more than the limit of 4' });
  });
});

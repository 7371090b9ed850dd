import { createHash, type Hash } from 'node:crypto';
import { constants as fsConstants, type Stats } from 'node:fs';
import { lstat, mkdtemp, open, readdir, readFile, readlink, rm, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Minimatch } from 'minimatch';
import { Header, Pax, type HeaderData } from 'tar';
import { LifeboatError, type ArtifactMetadata } from '@lifeboat/shared';
import { abortReason, fsReason, isCode, isFsError, shown, throttled } from '../fs-errors.js';
import type { JobContext } from '../sources/source.js';

/**
 * The backup half of the files source: walks the listed paths and produces their tar stream.
 *
 * Backup walks the tree itself and writes the tar with node-tar's Header and Pax encoders. node-tar's own
 * `create` cannot be used: it stops the whole archive (an 'error', then a stalled stream) on the first
 * unreadable or vanished file, and on a file that grows while it is read — a live log file.
 */

/** Bytes read from a file per read(2): a large file streams through in pieces this size, never whole. */
const READ_BYTES = 1024 * 1024;
const BLOCK = 512;
const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
/** Opening with O_NOFOLLOW never reads through a symlink swapped in after lstat; O_NONBLOCK never hangs on a FIFO. */
const OPEN_FOR_READING = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;

export type FilesMetadata = Extract<ArtifactMetadata, { kind: 'files' }>;
type Counts = Omit<FilesMetadata, 'kind' | 'paths' | 'manifest'>;

/**
 * The name of the archive's last entry, the per-file manifest. Archived names are absolute paths without their
 * leading "/", normalized (no "." components), and the only one starting with "./" is "./" itself (an archive
 * of "/"): this name cannot collide with an archived file — not even with a file /.lifeboat-manifest.jsonl,
 * whose entry is ".lifeboat-manifest.jsonl".
 */
export const MANIFEST_ENTRY_NAME = './.lifeboat-manifest.jsonl';

/** One line of the manifest, for each entry archived; `path` is the path as backed up (the entry name with its "/"). */
export type ManifestLine =
  | { path: string; type: 'file'; size: number; sha256: string }
  | { path: string; type: 'directory' }
  | { path: string; type: 'symlink'; target: string }
  /** Another name of a file archived earlier (`target`, as backed up): restored as a hard link to it. */
  | { path: string; type: 'hardlink'; target: string };

/** Manifest lines are written to the spool file in pieces of about this size. */
const SPOOL_FLUSH_BYTES = 64 * 1024;

interface Archiver {
  signal: AbortSignal;
  warn(message: string): void;
  isExcluded(absolutePath: string): boolean;
  /** dev:ino of files with several links → the entry name of the copy already archived. */
  hardlinks: Map<string, string>;
  owners: OwnerNames;
  counts: Counts;
  manifest: ManifestSpool;
}

/** The tar stream of the listed paths, and what it holds once it has been read to the end. */
export interface TarArchive {
  /** The listed paths, resolved, without those inside another listed path: the trees archived, in order. */
  roots: string[];
  /** Read once, at the consumer's pace: the walk runs only as fast as the stream is read. */
  stream: Readable;
  /** Settles after `stream` has ended, as BackupStream's metadata does. */
  metadata: Promise<FilesMetadata>;
  /** The private directory the manifest is spooled in while the archive is written; gone once `metadata` settled. */
  manifestSpool: string;
}

/**
 * Archives paths on this agent, leaving out what the exclude globs (minimatch, matched against absolute
 * paths) match. Fails before any byte moves when a listed path is missing.
 */
export async function archivePaths(paths: readonly string[], exclude: readonly string[], ctx: JobContext): Promise<TarArchive> {
  if (ctx.signal.aborted) throw abortReason(ctx.signal);
  const listed = [...new Set(paths.map((p) => path.posix.resolve(p)))];
  for (const p of listed) await checkRoot(p, ctx);
  const roots = withoutNested(listed);
  const patterns = exclude.map((glob) => new Minimatch(glob, { dot: true }));
  const counts: Counts = { entries: 0, files: 0, directories: 0, symlinks: 0, fileBytes: 0 };
  const owners = await readOwnerNames();
  // Last, so nothing that can still fail before the stream exists leaves the spool behind.
  const manifest = await ManifestSpool.create();
  const archiver: Archiver = {
    signal: ctx.signal,
    warn: (message) => ctx.warn(message),
    isExcluded: (p) => patterns.some((pattern) => pattern.match(p)),
    hardlinks: new Map(),
    owners,
    counts,
    manifest,
  };
  // Pull-based: the generator runs only as fast as the consumer reads, so memory stays near one read buffer.
  const stream = Readable.from(reportProgress(archive(roots, archiver), ctx), { objectMode: false, highWaterMark: READ_BYTES });
  const onAbort = () => stream.destroy(abortReason(ctx.signal));
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  const metadata = finished(stream)
    .then((): FilesMetadata => ({ kind: 'files', paths: roots, ...counts, manifest: manifest.recorded() }))
    .catch((err: unknown) => {
      throw backupError(err, ctx.signal);
    })
    .finally(async () => {
      ctx.signal.removeEventListener('abort', onAbort);
      // However the backup ended: the metadata settles only once the spool is gone.
      await manifest.remove();
    });
  // The consumer reads `metadata` after the stream; a failure before then must not be an unhandled rejection.
  metadata.catch(() => {});
  return { roots, stream, metadata, manifestSpool: manifest.dir };
}

/** A path inside another listed path would be archived twice. */
function withoutNested(paths: readonly string[]): string[] {
  return paths.filter((p) => !paths.some((other) => other !== p && isInside(p, other)));
}

function isInside(p: string, dir: string): boolean {
  return dir === '/' ? p !== '/' : p.startsWith(dir + '/');
}

/** Fails before any byte moves when a listed path is missing; a symlink is kept as a link, and said so. */
async function checkRoot(root: string, ctx: JobContext): Promise<void> {
  let info: Stats;
  try {
    info = await lstat(root);
  } catch (err) {
    if (isFsError(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) {
      throw new LifeboatError('path_not_found', `path ${root} does not exist on this agent (plan step files.paths)`);
    }
    throw new LifeboatError('source_failed', `cannot read path ${root}: ${fsReason(err)}`);
  }
  if (info.isSymbolicLink()) {
    const target = await readlink(root).catch(() => '?');
    ctx.warn(`path ${root} is a symbolic link (to ${target}): it is archived as a link, its target is not followed`);
  }
}

async function* archive(roots: readonly string[], a: Archiver): AsyncGenerator<Buffer> {
  try {
    for (const root of roots) yield* archiveTree(root, a);
    if (a.counts.entries === 0) {
      throw new LifeboatError('source_failed', `nothing was archived from ${roots.join(', ')}: every path was excluded, unreadable or vanished`);
    }
    yield* a.manifest.archiveEntry(a.signal);
    yield END_OF_ARCHIVE;
  } finally {
    await a.manifest.close();
  }
}

/** Depth-first, children in sorted order: the same tree gives the same archive, which deduplicates best. */
async function* archiveTree(root: string, a: Archiver): AsyncGenerator<Buffer> {
  const pending = [root];
  while (pending.length > 0) {
    if (a.signal.aborted) throw abortReason(a.signal);
    const p = pending.pop()!;
    if (a.isExcluded(p)) continue;
    const children = yield* archivePath(p, a);
    for (let i = children.length - 1; i >= 0; i--) pending.push(path.posix.join(p, children[i]!));
  }
}

/** Archives one path; returns the names in it when it is a directory. */
async function* archivePath(p: string, a: Archiver): AsyncGenerator<Buffer, string[]> {
  const info = await orWarn(p, a, () => lstat(p));
  if (!info) return [];
  if (info.isDirectory()) return yield* archiveDirectory(p, info, a);
  if (info.isFile()) yield* archiveFile(p, info, a);
  else if (info.isSymbolicLink()) yield* archiveSymlink(p, info, a);
  else a.warn(`skipped ${shown(p)}: ${specialKind(info)} are not backed up`);
  return [];
}

async function* archiveDirectory(p: string, info: Stats, a: Archiver): AsyncGenerator<Buffer, string[]> {
  const name = entryName(p);
  const header = encodeHeader({ name: name === '' ? './' : name + '/', type: 'Directory', info, size: 0 }, a);
  if (!header) return [];
  yield header;
  a.counts.entries++;
  a.counts.directories++;
  await a.manifest.add({ path: p, type: 'directory' });
  return await listDirectory(p, a);
}

async function listDirectory(p: string, a: Archiver): Promise<string[]> {
  const raw = await orWarn(p, a, () => readdir(p, { encoding: 'buffer' }), ' (the directory is archived without its contents)');
  if (!raw) return [];
  const names: string[] = [];
  for (const bytes of raw) {
    const name = utf8OrNull(bytes);
    if (name === null) a.warn(`skipped ${shown(path.posix.join(p, bytes.toString('utf8')))}: its name is not valid UTF-8, which this archive format does not carry`);
    else names.push(name);
  }
  return names.sort();
}

async function* archiveSymlink(p: string, info: Stats, a: Archiver): AsyncGenerator<Buffer> {
  const raw = await orWarn(p, a, () => readlink(p, { encoding: 'buffer' }));
  if (!raw) return;
  const linkpath = utf8OrNull(raw);
  if (linkpath === null) return a.warn(`skipped ${shown(p)}: its link target is not valid UTF-8`);
  const header = encodeHeader({ name: entryName(p), type: 'SymbolicLink', info, size: 0, linkpath }, a);
  if (!header) return;
  yield header;
  a.counts.entries++;
  a.counts.symlinks++;
  await a.manifest.add({ path: p, type: 'symlink', target: linkpath });
}

async function* archiveFile(p: string, info: Stats, a: Archiver): AsyncGenerator<Buffer> {
  const name = entryName(p);
  const firstCopy = info.nlink > 1 ? a.hardlinks.get(`${info.dev}:${info.ino}`) : undefined;
  if (firstCopy !== undefined) {
    const header = encodeHeader({ name, type: 'Link', info, size: 0, linkpath: firstCopy }, a);
    if (!header) return;
    yield header;
    a.counts.entries++;
    a.counts.files++;
    await a.manifest.add({ path: p, type: 'hardlink', target: '/' + firstCopy });
    return;
  }
  const handle = await orWarn(p, a, () => open(p, OPEN_FOR_READING));
  if (!handle) return;
  try {
    // The header describes what is read: the opened file's fstat, not the earlier lstat.
    const opened = await handle.stat();
    if (!opened.isFile()) return a.warn(`skipped ${shown(p)}: it was replaced by something else during the backup`);
    const header = encodeHeader({ name, type: 'File', info: opened, size: opened.size }, a);
    if (!header) return;
    yield header;
    const hash = createHash('sha256');
    const complete = yield* fileContent(handle, opened.size, p, a, hash);
    a.counts.entries++;
    a.counts.files++;
    a.counts.fileBytes += opened.size;
    await a.manifest.add({ path: p, type: 'file', size: opened.size, sha256: hash.digest('hex') });
    if (opened.nlink > 1) a.hardlinks.set(`${opened.dev}:${opened.ino}`, name);
    if (complete) await warnIfChanged(handle, opened, p, a);
  } finally {
    await handle.close();
  }
}

/**
 * Exactly `size` bytes and the block padding, whatever happens to the file meanwhile: the header already
 * promised that size, so a file that shrank or failed to read is padded with zeros (and warned about),
 * and one that grew is cut at the size it had when opened. Returns whether all of it could be read.
 * `hash` takes the content as archived (zeros included): what a restore of this archive writes.
 */
async function* fileContent(handle: FileHandle, size: number, p: string, a: Archiver, hash: Hash): AsyncGenerator<Buffer, boolean> {
  let done = 0;
  while (done < size) {
    if (a.signal.aborted) throw abortReason(a.signal);
    const want = Math.min(READ_BYTES, size - done);
    const buffer = Buffer.allocUnsafe(want);
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(buffer, 0, want, done));
    } catch (err) {
      if (!isFsError(err)) throw err;
      a.warn(`cannot read ${shown(p)}: ${fsReason(err)} at byte ${done} of ${size}; the archived copy is padded with zeros from there`);
      break;
    }
    if (bytesRead === 0) {
      a.warn(`${shown(p)} shrank from ${size} to ${done} bytes while being read; the archived copy is padded with zeros`);
      break;
    }
    done += bytesRead;
    const piece = bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
    hash.update(piece);
    yield piece;
  }
  for (let left = size - done; left > 0; left -= READ_BYTES) {
    const zeros = Buffer.alloc(Math.min(left, READ_BYTES));
    hash.update(zeros);
    yield zeros;
  }
  const padding = (BLOCK - (size % BLOCK)) % BLOCK;
  if (padding > 0) yield Buffer.alloc(padding);
  return done === size;
}

async function warnIfChanged(handle: FileHandle, before: Stats, p: string, a: Archiver): Promise<void> {
  const after = await handle.stat();
  if (after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
    a.warn(`${shown(p)} changed while being read; the archived copy may mix old and new content`);
  }
}

interface EntryFields {
  /** The path inside the archive: the absolute path without its leading "/". */
  name: string;
  type: 'File' | 'Directory' | 'SymbolicLink' | 'Link';
  info: Stats;
  size: number;
  linkpath?: string;
}

/**
 * The entry's header blocks: ustar, preceded by a pax header when a field does not fit ustar (long or
 * non-ASCII names, big ids or sizes) or when the mtime has a fractional second (ustar holds whole seconds).
 * Returns null, with a warning, for a name that can be carried neither way.
 */
function encodeHeader(fields: EntryFields, a: Archiver): Buffer | null {
  const { name, type, info, size, linkpath } = fields;
  const data: HeaderData = {
    path: name,
    type,
    mode: info.mode & 0o7777,
    uid: info.uid,
    gid: info.gid,
    size,
    mtime: info.mtime,
    linkpath,
    uname: a.owners.users.get(info.uid),
    gname: a.owners.groups.get(info.gid),
  };
  const header = new Header(data);
  const needsPax = header.encode() || info.mtime.getTime() % 1000 !== 0;
  if (!needsPax) return header.block!;
  // A pax reader splits records at newlines (node-tar's does), so a name with one would let a file's name
  // forge records (a size, a uid) for the restore. Such names go only in the ustar fields, when they fit.
  const newlineIn = (s: string | undefined) => s !== undefined && s.includes('\n');
  if ((newlineIn(name) || newlineIn(linkpath)) && !fitsUstar(name, linkpath)) {
    a.warn(`skipped ${shown('/' + name)}: a name with a newline must be short and ASCII to be archived safely`);
    return null;
  }
  const pax = new Pax({ ...data, path: newlineIn(name) ? undefined : name, linkpath: newlineIn(linkpath) ? undefined : linkpath });
  return Buffer.concat([pax.encode(), header.block!]);
}

function fitsUstar(name: string, linkpath: string | undefined): boolean {
  return !new Header({ path: name, linkpath, type: 'File' }).encode();
}

function entryName(absolutePath: string): string {
  return absolutePath.slice(1);
}

function specialKind(info: Stats): string {
  if (info.isSocket()) return 'sockets';
  if (info.isFIFO()) return 'FIFOs';
  return 'device files';
}

async function* reportProgress(source: AsyncIterable<Buffer>, ctx: JobContext): AsyncGenerator<Buffer> {
  const report = throttled((bytes) => ctx.progress('archiving', bytes));
  let bytes = 0;
  for await (const chunk of source) {
    bytes += chunk.length;
    report(bytes);
    yield chunk;
  }
  ctx.progress('archiving', bytes);
}

function backupError(err: unknown, signal: AbortSignal): LifeboatError {
  if (signal.aborted) return abortReason(signal);
  if (err instanceof LifeboatError) return err;
  if (isCode(err, 'ERR_STREAM_PREMATURE_CLOSE')) return new LifeboatError('source_failed', 'the archive stream was closed before it was complete');
  return new LifeboatError('source_failed', `archiving failed: ${err instanceof Error ? err.message : String(err)}`);
}

interface OwnerNames {
  users: Map<number, string>;
  groups: Map<number, string>;
}

/** Names for the uname/gname fields, as GNU tar records them; restores use the numeric ids. */
async function readOwnerNames(): Promise<OwnerNames> {
  const [users, groups] = await Promise.all([readIdNames('/etc/passwd'), readIdNames('/etc/group')]);
  return { users, groups };
}

/** "name:x:id:…" lines; ids known only elsewhere (LDAP, another container) simply have no name. */
async function readIdNames(file: string): Promise<Map<number, string>> {
  const names = new Map<number, string>();
  const text = await readFile(file, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':');
    const n = Number(id);
    if (name && id && Number.isInteger(n) && !names.has(n)) names.set(n, name);
  }
  return names;
}

/** Runs one filesystem call on p; a failure the backup survives becomes a warning and undefined. */
async function orWarn<T>(p: string, a: Archiver, op: () => Promise<T>, consequence = ''): Promise<T | undefined> {
  try {
    return await op();
  } catch (err) {
    if (!isFsError(err)) throw err;
    const reason = err.code === 'ENOENT' ? 'it was deleted during the backup (ENOENT)' : fsReason(err);
    a.warn(`cannot read ${shown(p)}: ${reason}${consequence}`);
    return undefined;
  }
}

function utf8OrNull(bytes: Buffer): string | null {
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : null;
}

/**
 * The per-file manifest, spooled to a 0600 file in a private 0700 temp dir as the walk goes (never held in
 * memory: a million entries would be a hundred MB), then archived as the last entry. Its SHA-256 and line count
 * go into the metadata.
 */
class ManifestSpool {
  private pending: string[] = [];
  private pendingBytes = 0;
  private written = 0;
  private lines = 0;
  private readonly hash = createHash('sha256');
  private digest: string | null = null;

  private constructor(
    /** The private temp dir: removed, with everything in it, by remove(). */
    readonly dir: string,
    readonly file: string,
    private handle: FileHandle | null,
  ) {}

  static async create(): Promise<ManifestSpool> {
    // mkdtemp makes it 0700.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-manifest-'));
    const file = path.join(dir, 'manifest.jsonl');
    try {
      return new ManifestSpool(dir, file, await open(file, 'wx', 0o600));
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async add(line: ManifestLine): Promise<void> {
    const text = `${JSON.stringify(line)}\n`;
    this.pending.push(text);
    this.pendingBytes += text.length;
    this.lines++;
    if (this.pendingBytes >= SPOOL_FLUSH_BYTES) await this.flush();
  }

  /** The manifest as the last entry: header, the spool's bytes read back in pieces, padding. */
  async *archiveEntry(signal: AbortSignal): AsyncGenerator<Buffer> {
    await this.flush();
    await this.close();
    this.digest = this.hash.digest('hex');
    const size = this.written;
    // A fixed time: an unchanged tree must give a byte-identical archive, or its last chunk is new every backup.
    const data: HeaderData = { path: MANIFEST_ENTRY_NAME, type: 'File', mode: 0o600, uid: 0, gid: 0, size, mtime: new Date(0) };
    const header = new Header(data);
    // A manifest over 8 GiB does not fit ustar's size field.
    yield header.encode() ? Buffer.concat([new Pax(data).encode(), header.block!]) : header.block!;
    const reader = await open(this.file, 'r');
    try {
      let done = 0;
      while (done < size) {
        if (signal.aborted) throw abortReason(signal);
        const want = Math.min(READ_BYTES, size - done);
        const { bytesRead, buffer } = await reader.read(Buffer.allocUnsafe(want), 0, want, done);
        if (bytesRead === 0) throw new LifeboatError('source_failed', `the manifest spool ${this.file} shrank while being archived`);
        done += bytesRead;
        yield bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
      }
    } finally {
      await reader.close();
    }
    const padding = (BLOCK - (size % BLOCK)) % BLOCK;
    if (padding > 0) yield Buffer.alloc(padding);
  }

  /** What the metadata records; only once the manifest was archived. */
  recorded(): { entries: number; sha256: string } {
    if (this.digest === null) throw new LifeboatError('source_failed', 'the archive ended without its manifest');
    return { entries: this.lines, sha256: this.digest };
  }

  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = null;
    await handle?.close().catch(() => {});
  }

  async remove(): Promise<void> {
    await this.close();
    await rm(this.dir, { recursive: true, force: true });
  }

  private async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    if (!this.handle) throw new LifeboatError('source_failed', 'the manifest spool was closed before the archive was complete');
    const bytes = Buffer.from(this.pending.join(''), 'utf8');
    this.pending = [];
    this.pendingBytes = 0;
    this.hash.update(bytes);
    for (let at = 0; at < bytes.length; ) {
      const { bytesWritten } = await this.handle.write(bytes, at, bytes.length - at, this.written);
      at += bytesWritten;
      this.written += bytesWritten;
    }
  }
}

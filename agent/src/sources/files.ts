import { constants as fsConstants, type Stats } from 'node:fs';
import { chmod, lchown, lstat, lutimes, mkdir, open, opendir, readdir, readFile, readlink, realpath, stat, utimes, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Minimatch } from 'minimatch';
import { Header, Pax, ReadEntry, Unpack, type HeaderData } from 'tar';
import { formatBytes, LifeboatError, type ArtifactMetadata, type FilesStepOptions, type RestoreTarget } from '@lifeboat/shared';
import type { BackupStream, JobContext, RestoreOptions, RestoreSummary, Source } from './source.js';

/**
 * The files source: a tar stream of paths on the agent, and its safe extraction.
 *
 * Backup walks the tree itself and writes the tar with node-tar's Header and Pax encoders. node-tar's own
 * `create` cannot be used: it stops the whole archive (an 'error', then a stalled stream) on the first
 * unreadable or vanished file, and on a file that grows while it is read — a live log file.
 *
 * Restore uses node-tar's Unpack (strict, no preservePaths) behind a filter that refuses what must not be
 * written, then sets what node-tar leaves wrong: exact modes (umask, setgid, 0700 forced on directories),
 * directory mtimes (changed by their children), and symlinks' mtimes and owners.
 */

/** Bytes read from a file per read(2): a large file streams through in pieces this size, never whole. */
const READ_BYTES = 1024 * 1024;
const BLOCK = 512;
const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
const PROGRESS_INTERVAL_MS = 250;
/** Opening with O_NOFOLLOW never reads through a symlink swapped in after lstat; O_NONBLOCK never hangs on a FIFO. */
const OPEN_FOR_READING = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;

export interface FilesRestoreLimits {
  /** Total size of the entries in the archive. */
  maxBytes: number;
  maxEntries: number;
  /** Path components of one entry. */
  maxDepth: number;
}

export const DEFAULT_RESTORE_LIMITS: Readonly<FilesRestoreLimits> = {
  maxBytes: 1024 ** 4,
  maxEntries: 10_000_000,
  maxDepth: 256,
};

/** Skipped entries listed one by one (and warned about); beyond this they are only counted. */
const MAX_LISTED_SKIPS = 1000;

export function createFilesSource(limits: Partial<FilesRestoreLimits> = {}): Source<FilesStepOptions> {
  const caps: FilesRestoreLimits = { ...DEFAULT_RESTORE_LIMITS, ...limits };
  return {
    kind: 'files',
    backup: backupFiles,
    restore: (input, target, options, ctx) => restoreFiles(input, target, options, ctx, caps),
  };
}

export const filesSource: Source<FilesStepOptions> = createFilesSource();

type FilesMetadata = Extract<ArtifactMetadata, { kind: 'files' }>;
type Counts = Omit<FilesMetadata, 'kind' | 'paths'>;

// ── backup ────────────────────────────────────────────────────────────────────

interface Archiver {
  signal: AbortSignal;
  warn(message: string): void;
  isExcluded(absolutePath: string): boolean;
  /** dev:ino of files with several links → the entry name of the copy already archived. */
  hardlinks: Map<string, string>;
  owners: OwnerNames;
  counts: Counts;
}

async function backupFiles(options: FilesStepOptions, ctx: JobContext): Promise<BackupStream> {
  if (ctx.signal.aborted) throw abortReason(ctx.signal);
  const listed = [...new Set(options.paths.map((p) => path.posix.resolve(p)))];
  for (const p of listed) await checkRoot(p, ctx);
  const roots = withoutNested(listed);
  const patterns = options.exclude.map((glob) => new Minimatch(glob, { dot: true }));
  const counts: Counts = { entries: 0, files: 0, directories: 0, symlinks: 0, fileBytes: 0 };
  const archiver: Archiver = {
    signal: ctx.signal,
    warn: (message) => ctx.warn(message),
    isExcluded: (p) => patterns.some((pattern) => pattern.match(p)),
    hardlinks: new Map(),
    owners: await readOwnerNames(),
    counts,
  };
  // Pull-based: the generator runs only as fast as the consumer reads, so memory stays near one read buffer.
  const stream = Readable.from(reportProgress(archive(roots, archiver), ctx), { objectMode: false, highWaterMark: READ_BYTES });
  const onAbort = () => stream.destroy(abortReason(ctx.signal));
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  const metadata = finished(stream)
    .then((): FilesMetadata => ({ kind: 'files', paths: roots, ...counts }))
    .catch((err: unknown) => {
      throw backupError(err, ctx.signal);
    })
    .finally(() => ctx.signal.removeEventListener('abort', onAbort));
  // The consumer reads `metadata` after the stream; a failure before then must not be an unhandled rejection.
  metadata.catch(() => {});
  return { kind: 'files', name: roots.join(' '), stream, metadata };
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
  for (const root of roots) yield* archiveTree(root, a);
  if (a.counts.entries === 0) {
    throw new LifeboatError('source_failed', `nothing was archived from ${roots.join(', ')}: every path was excluded, unreadable or vanished`);
  }
  yield END_OF_ARCHIVE;
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
    const complete = yield* fileContent(handle, opened.size, p, a);
    a.counts.entries++;
    a.counts.files++;
    a.counts.fileBytes += opened.size;
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
 */
async function* fileContent(handle: FileHandle, size: number, p: string, a: Archiver): AsyncGenerator<Buffer, boolean> {
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
    yield bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
  }
  for (let left = size - done; left > 0; left -= READ_BYTES) yield Buffer.alloc(Math.min(left, READ_BYTES));
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

// ── restore ───────────────────────────────────────────────────────────────────

async function restoreFiles(
  input: Readable,
  target: RestoreTarget,
  options: RestoreOptions,
  ctx: JobContext,
  limits: FilesRestoreLimits,
): Promise<RestoreSummary> {
  try {
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    const prepared = await prepareTarget(target);
    const roots = [...new Set([prepared.root, path.posix.resolve(target.path)])];
    const guard = new ExtractionGuard(roots, limits, fileModeCheck(await processUmask()), ctx);
    await extract(input, prepared.root, guard, options, ctx);
    await applyFixups(guard.fixups, prepared.root, options.preserveOwner, ctx);
    // Kept 0700 while being filled, so no one else could plant anything in it meanwhile; an archive of "/"
    // carries the target's own mode, already set.
    if (prepared.created && !guard.fixups.has('')) await chmod(prepared.root, 0o755);
    return {
      summary: `restored ${guard.restored} entries (${formatBytes(guard.restoredBytes)}) into ${target.path}`,
      skipped: guard.skippedList(),
    };
  } catch (err) {
    input.destroy();
    throw restoreError(err);
  }
}

interface PreparedTarget {
  /** The target's real path: what node-tar extracts into and what every containment check compares with. */
  root: string;
  created: boolean;
}

async function prepareTarget(target: RestoreTarget): Promise<PreparedTarget> {
  const dir = target.path;
  if (!path.posix.isAbsolute(dir)) throw new LifeboatError('restore_refused', `restore target ${dir} is not an absolute path`);
  const existing = await stat(dir).catch((err: unknown) => {
    if (isCode(err, 'ENOENT')) return null;
    throw new LifeboatError('restore_failed', `cannot use restore target ${dir}: ${fsReason(err)}`);
  });
  if (existing === null) {
    try {
      await mkdir(path.posix.dirname(dir), { recursive: true, mode: 0o755 });
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      throw new LifeboatError('restore_failed', `cannot create restore target ${dir}: ${fsReason(err)}`);
    }
    return { root: await realpath(dir), created: true };
  }
  if (!existing.isDirectory()) throw new LifeboatError('restore_refused', `restore target ${dir} exists and is not a directory`);
  if (!target.force && !(await isEmptyDirectory(dir))) {
    throw new LifeboatError('restore_refused', `restore target ${dir} is not empty; pass --force to restore into it anyway`);
  }
  return { root: await realpath(dir), created: false };
}

async function isEmptyDirectory(dir: string): Promise<boolean> {
  const handle = await opendir(dir);
  try {
    return (await handle.read()) === null;
  } finally {
    await handle.close();
  }
}

/** What node-tar leaves wrong and is set once everything is written (see applyFixups). */
interface Fixup {
  kind: 'file' | 'directory' | 'symlink';
  mode: number;
  mtime: Date | undefined;
  uid: number | undefined;
  gid: number | undefined;
}

/**
 * node-tar's filter: decides from each entry's header, before any byte of it is written, whether it may be
 * extracted. Refused entries are skipped and listed with why; a limit exceeded fails the whole restore.
 */
class ExtractionGuard {
  restored = 0;
  restoredBytes = 0;
  /** Archive path (no trailing slash; "" is the target itself) → what to set after extraction. */
  readonly fixups = new Map<string, Fixup>();
  /** Set by extract(): stops the extraction with this error. */
  onFatal: (err: LifeboatError) => void = () => {};
  private entries = 0;
  private declaredBytes = 0;
  private failed = false;
  /** Symlinks extracted so far, archive path → link target, to resolve chains of links. */
  private readonly symlinks = new Map<string, string>();
  private readonly seen = new WeakSet<ReadEntry>();
  private readonly skipped: string[] = [];
  private unlistedSkips = 0;

  constructor(
    /** The restore target, as its real path and as given: absolute link targets inside either are inside. */
    private readonly roots: readonly string[],
    readonly limits: FilesRestoreLimits,
    private readonly fileNeedsFixup: (mode: number) => boolean,
    private readonly ctx: JobContext,
  ) {}

  accept(entry: ReadEntry): boolean {
    this.seen.add(entry);
    if (this.failed) return false;
    const overLimit = this.countAgainstLimits(entry);
    if (overLimit) return this.fail(overLimit);
    const checked = splitEntryPath(entry.path);
    if (!checked.ok) return this.skip(entry.path, checked.reason);
    if (checked.parts.length > this.limits.maxDepth) {
      return this.fail(`entry ${shown(entry.path)} is ${checked.parts.length} directories deep, more than the limit of ${this.limits.maxDepth}`);
    }
    const refusal = this.refusal(entry, checked.parts);
    if (refusal) return this.skip(entry.path, refusal);
    this.record(entry, checked.parts);
    return true;
  }

  /** node-tar drops entries of types it does not know before the filter sees them: list those too. */
  ignored(entry: ReadEntry): void {
    if (this.seen.has(entry) || this.failed) return;
    if (entry.meta) {
      this.fail(`the archive is corrupt: an extended header of ${entry.size} bytes is larger than allowed`);
      return;
    }
    this.skip(entry.path, `entries of type ${entry.type} are not restored`);
  }

  skippedList(): string[] {
    return this.unlistedSkips > 0 ? [...this.skipped, `… and ${this.unlistedSkips} more entries not restored`] : [...this.skipped];
  }

  private countAgainstLimits(entry: ReadEntry): string | null {
    this.entries++;
    this.declaredBytes += entry.size;
    if (this.entries > this.limits.maxEntries) return `the archive has more than ${this.limits.maxEntries} entries, the restore limit`;
    if (this.declaredBytes > this.limits.maxBytes) return `the archive holds more than ${formatBytes(this.limits.maxBytes)}, the restore limit`;
    return null;
  }

  private refusal(entry: ReadEntry, parts: string[]): string | null {
    const isDirectory = entry.type === 'Directory' || entry.type === 'GNUDumpDir';
    if (parts.length === 0 && !isDirectory) return 'an entry that would replace the restore target itself';
    switch (entry.type) {
      case 'File':
      case 'OldFile':
      case 'ContiguousFile':
      case 'Directory':
      case 'GNUDumpDir':
        return null;
      case 'SymbolicLink':
        return this.symlinkRefusal(entry, parts);
      case 'Link':
        return hardlinkRefusal(entry.linkpath);
      case 'CharacterDevice':
      case 'BlockDevice':
        return 'device files are not restored';
      case 'FIFO':
        return 'FIFOs are not restored';
      default:
        return `entries of type ${entry.type} are not restored`;
    }
  }

  private symlinkRefusal(entry: ReadEntry, parts: string[]): string | null {
    const linkpath = entry.linkpath;
    if (!linkpath) return 'a symbolic link without a target';
    if (hasForeignRoot(linkpath)) return `symbolic link to ${shown(linkpath)} looks like a Windows path`;
    const linkDir = parts.slice(0, -1);
    if (resolveLink(linkDir, linkpath, this.roots, this.symlinks) === null) {
      return `symbolic link to ${shown(linkpath)} points outside the restore target`;
    }
    // node-tar strips the "/" of an absolute link target (and, strict, fails on it): keep the link's meaning relative.
    const inside = linkpath.startsWith('/') ? partsUnderRoot(linkpath, this.roots) : null;
    if (inside) entry.linkpath = path.posix.relative('/' + linkDir.join('/'), '/' + inside.join('/')) || '.';
    return null;
  }

  private record(entry: ReadEntry, parts: string[]): void {
    const key = parts.join('/');
    this.forgetReplacedSymlinks(parts);
    this.restored++;
    const fixup = { mode: entry.mode ?? 0, mtime: entry.mtime, uid: entry.uid, gid: entry.gid };
    switch (entry.type) {
      case 'Directory':
      case 'GNUDumpDir':
        this.fixups.set(key, { kind: 'directory', ...fixup, mode: entry.mode ?? 0o755 });
        break;
      case 'SymbolicLink':
        this.symlinks.set(key, entry.linkpath!);
        this.fixups.set(key, { kind: 'symlink', ...fixup });
        break;
      case 'Link':
        // Its mode and times are its inode's, set through the first name.
        this.fixups.delete(key);
        break;
      default:
        this.restoredBytes += entry.size;
        if (this.fileNeedsFixup(fixup.mode)) this.fixups.set(key, { kind: 'file', ...fixup });
        else this.fixups.delete(key);
    }
  }

  /** An entry replaces whatever was at its path, and (node-tar's unlink mode) any symlink among its parents. */
  private forgetReplacedSymlinks(parts: string[]): void {
    if (this.symlinks.size === 0) return;
    for (let i = 1; i <= parts.length; i++) this.symlinks.delete(parts.slice(0, i).join('/'));
  }

  private skip(entryPath: string, reason: string): false {
    if (this.skipped.length < MAX_LISTED_SKIPS) {
      const line = `${shown(entryPath)}: ${reason}`;
      this.skipped.push(line);
      this.ctx.warn(`not restored: ${line}`);
    } else {
      this.unlistedSkips++;
    }
    return false;
  }

  private fail(message: string): false {
    this.failed = true;
    this.onFatal(new LifeboatError('restore_failed', message));
    return false;
  }
}

type CheckedPath = { ok: true; parts: string[] } | { ok: false; reason: string };

/** An entry's path as components under the target; absolute paths and ".." are refused, not rewritten. */
function splitEntryPath(entryPath: string): CheckedPath {
  if (entryPath.startsWith('/')) return { ok: false, reason: 'an absolute path' };
  if (hasForeignRoot(entryPath)) return { ok: false, reason: 'a path that looks like a Windows drive or share' };
  const parts = entryPath.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) return { ok: false, reason: "a path containing '..'" };
  return { ok: true, parts };
}

/** node-tar strips Windows roots ("c:", "\\") from paths even on Linux, and in strict mode fails on it. */
function hasForeignRoot(p: string): boolean {
  return !p.startsWith('/') && path.win32.parse(p).root !== '';
}

function hardlinkRefusal(linkpath: string | undefined): string | null {
  if (!linkpath) return 'a hard link without a target';
  // A hard link names an entry of the archive: never absolute, never "..", as node-tar itself requires.
  const escapes = linkpath.startsWith('/') || hasForeignRoot(linkpath) || linkpath.split('/').includes('..');
  return escapes ? `hard link to ${shown(linkpath)} points outside the restore target` : null;
}

const MAX_SYMLINK_HOPS = 40;

/**
 * Where a symbolic link leads, as components under the restore target, or null when it leaves it.
 * Relative targets start from the link's own directory; links extracted earlier are followed, so a chain
 * (a -> ., b -> a/..) cannot hide an escape that each link alone does not show.
 */
function resolveLink(linkDir: readonly string[], linkpath: string, roots: readonly string[], symlinks: ReadonlyMap<string, string>): string[] | null {
  const resolved: string[] = [];
  let pending: string[] = [];
  const follow = (target: string): boolean => {
    if (target.startsWith('/')) {
      const inside = partsUnderRoot(target, roots);
      if (!inside) return false;
      resolved.length = 0;
      pending = [...inside, ...pending];
    } else {
      pending = [...target.split('/'), ...pending];
    }
    return true;
  };
  resolved.push(...linkDir);
  if (!follow(linkpath)) return null;
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (resolved.length === 0) return null;
      resolved.pop();
      continue;
    }
    resolved.push(part);
    const next = symlinks.get(resolved.join('/'));
    if (next === undefined) continue;
    if (++hops > MAX_SYMLINK_HOPS) return null;
    resolved.pop();
    if (!follow(next)) return null;
  }
  return resolved;
}

function partsUnderRoot(absolutePath: string, roots: readonly string[]): string[] | null {
  for (const root of roots) {
    if (absolutePath === root) return [];
    const prefix = root.endsWith('/') ? root : root + '/';
    if (absolutePath.startsWith(prefix)) return absolutePath.slice(prefix.length).split('/');
  }
  return null;
}

async function extract(input: Readable, root: string, guard: ExtractionGuard, options: RestoreOptions, ctx: JobContext): Promise<void> {
  const unfinished = new UnfinishedEntries();
  const unpack = new Unpack({
    cwd: root,
    strict: true,
    preservePaths: false,
    // Explicit both ways: node-tar's default is "preserve when root".
    preserveOwner: options.preserveOwner,
    noMtime: false,
    // Replace what is in the way (files, symlinks, even a symlink among an entry's parents) instead of
    // writing through it; in a fresh target there is nothing in the way.
    unlink: true,
    chmod: true,
    // Given, so node-tar never calls the deprecated process.umask(); exact modes are set by applyFixups.
    processUmask: 0,
    dmode: 0o755,
    fmode: 0o644,
    // Our own depth limit fires first; node-tar's counts differently ("a/b/" is 3), so leave it room.
    maxDepth: guard.limits.maxDepth + 2,
    brotli: false,
    zstd: false,
    filter: (_path, entry) => entry instanceof ReadEntry && guard.accept(entry) && unfinished.track(entry),
  });
  let failure: unknown = null;
  let rejectFailed: (err: unknown) => void = () => {};
  const failed = new Promise<never>((_, reject) => (rejectFailed = reject));
  failed.catch(() => {});
  const fail = (err: unknown) => {
    if (failure !== null) return;
    failure = err;
    rejectFailed(err);
    input.destroy();
    // A fresh error: node-tar writes its own fields (tarCode, code) onto the one it is given.
    unpack.abort(new Error('restore stopped'));
    unfinished.endAll();
  };
  guard.onFatal = fail;
  let sawEndOfArchive = false;
  unpack.on('eof', () => (sawEndOfArchive = true));
  unpack.on('ignoredEntry', (entry: ReadEntry) => guard.ignored(entry));
  unpack.on('error', fail);
  const closed = new Promise<void>((resolve) => unpack.on('close', resolve));
  const onAbort = () => fail(abortReason(ctx.signal));
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  try {
    await feed(input, unpack, failed, ctx);
    await Promise.race([closed, failed]);
  } catch (err) {
    fail(err);
    throw failure;
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
  }
  // node-tar accepts an archive cut at an entry boundary as complete: the end-of-archive blocks prove it is not.
  if (!sawEndOfArchive) throw new LifeboatError('restore_failed', 'the archive is truncated: it ends without the end-of-archive marker');
}

/**
 * Entries accepted and not yet written out. After an abort node-tar sends them no more data, and their
 * open files would stay open for good; ending them lets node-tar close each (a partial file is left).
 */
class UnfinishedEntries {
  private readonly entries = new Set<ReadEntry>();

  track(entry: ReadEntry): true {
    this.entries.add(entry);
    entry.once('end', () => this.entries.delete(entry));
    return true;
  }

  endAll(): void {
    // Not from inside node-tar's parse (fail() may run in the filter): ending an entry moves its queue on.
    setImmediate(() => {
      for (const entry of this.entries) entry.end();
    });
  }
}

/** Input → node-tar at node-tar's pace; stops at the first failure. */
async function feed(input: Readable, unpack: Unpack, failed: Promise<never>, ctx: JobContext): Promise<void> {
  const report = throttled((bytes) => ctx.progress('extracting', bytes));
  let bytes = 0;
  for await (const chunk of input as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    report(bytes);
    if (!unpack.write(chunk)) await Promise.race([new Promise((resolve) => unpack.once('drain', resolve)), failed]);
  }
  ctx.progress('extracting', bytes);
  unpack.end();
}

/**
 * Sets what node-tar leaves wrong, once nothing more is written: exact modes (node-tar creates through the
 * umask, forces 0700 onto directories, and a chown clears setuid/setgid), directory mtimes (each child
 * written changed them), and symlinks' mtimes and owners (node-tar sets neither). Directories go last,
 * deepest first, so a read-only directory is not closed before its contents are done.
 */
async function applyFixups(fixups: ReadonlyMap<string, Fixup>, root: string, preserveOwner: boolean, ctx: JobContext): Promise<void> {
  const ordered = [...fixups].sort(([keyA, a], [keyB, b]) => fixupOrder(keyB, b) - fixupOrder(keyA, a));
  const insideRoot = containmentCheck(root);
  for (const [key, fixup] of ordered) {
    const target = key === '' ? root : path.posix.join(root, key);
    try {
      if (await insideRoot(target)) await applyFixup(target, fixup, preserveOwner);
    } catch (err) {
      if (!isFsError(err)) throw err;
      ctx.warn(`could not set the mode or times of ${shown(target)}: ${fsReason(err)}`);
    }
  }
}

/** Larger first: files and symlinks, then directories from the deepest. */
function fixupOrder(key: string, fixup: Fixup): number {
  return fixup.kind === 'directory' ? key.split('/').length - (key === '' ? 1 : 0) : Number.MAX_SAFE_INTEGER;
}

async function applyFixup(target: string, fixup: Fixup, preserveOwner: boolean): Promise<void> {
  const info = await lstat(target).catch(() => null);
  // Something else took the path later in the archive: nothing of this entry's is left to fix.
  if (!info) return;
  if (fixup.kind === 'symlink') {
    if (!info.isSymbolicLink()) return;
    if (preserveOwner && fixup.uid !== undefined && fixup.gid !== undefined) await lchown(target, fixup.uid, fixup.gid);
    if (fixup.mtime) await lutimes(target, new Date(), exactSeconds(fixup.mtime));
    return;
  }
  if (fixup.kind === 'directory' ? !info.isDirectory() : !info.isFile()) return;
  await chmod(target, fixup.mode);
  if (fixup.kind === 'directory' && fixup.mtime) await utimes(target, new Date(), exactSeconds(fixup.mtime));
}

/**
 * A time for utimes that lands on its exact millisecond: libuv turns seconds (a double) into whole
 * microseconds by truncation, so 1600000000.123 would become .122999; half a microsecond more cannot.
 */
function exactSeconds(time: Date): number {
  return time.getTime() / 1000 + 5e-7;
}

/** True when a path's parent really is inside root: a fixup never reaches through a symlink. */
function containmentCheck(root: string): (p: string) => Promise<boolean> {
  const parents = new Map<string, boolean>();
  return async (p) => {
    if (p === root) return true;
    const parent = path.posix.dirname(p);
    let inside = parents.get(parent);
    if (inside === undefined) {
      const real = await realpath(parent).catch(() => null);
      inside = real !== null && (real === root || real.startsWith(root + '/'));
      parents.set(parent, inside);
    }
    return inside;
  };
}

/** Whether a file's mode survives creation through the umask and a chown unchanged; if not, it is fixed later. */
function fileModeCheck(umask: number): (mode: number) => boolean {
  return (mode) => (mode & 0o7000) !== 0 || (mode & umask) !== 0;
}

/** The process umask from /proc (process.umask() without an argument is deprecated); unknown → fix every file. */
async function processUmask(): Promise<number> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => '');
  const match = /^Umask:\s+([0-7]+)$/m.exec(status);
  return match ? parseInt(match[1]!, 8) : 0o777;
}

function restoreError(err: unknown): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const where = tarEntryPath(err);
  const message = err instanceof Error ? err.message : String(err);
  const tarCode = (err as { tarCode?: unknown } | null)?.tarCode;
  if (tarCode === 'TAR_BAD_ARCHIVE' || tarCode === 'TAR_ENTRY_INVALID') {
    return new LifeboatError('restore_failed', `the archive is truncated or corrupt: ${message.replace(/^TAR_\w+: /, '')}`);
  }
  if (isCode(err, 'ERR_STREAM_PREMATURE_CLOSE')) return new LifeboatError('restore_failed', 'the archive stream ended before it was complete');
  return new LifeboatError('restore_failed', `restore failed${where ? ` at ${shown(where)}` : ''}: ${message}`);
}

/** The entry node-tar was working on when it failed, if it says. */
function tarEntryPath(err: unknown): string | null {
  const entry = (err as { entry?: unknown } | null)?.entry;
  return entry instanceof ReadEntry ? entry.path : null;
}

// ── shared helpers ────────────────────────────────────────────────────────────

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

function throttled(report: (bytes: number) => void): (bytes: number) => void {
  let last = 0;
  return (bytes) => {
    const now = Date.now();
    if (now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    report(bytes);
  };
}

function abortReason(signal: AbortSignal): LifeboatError {
  const reason: unknown = signal.reason;
  if (reason instanceof LifeboatError) return reason;
  return new LifeboatError('cancelled', typeof reason === 'string' ? reason : 'the job was cancelled');
}

function isFsError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

function isCode(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/** "EACCES: permission denied", without the syscall and path Node appends (the path is already in our message). */
function fsReason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.message.replace(/, \w+ '[\s\S]*'$/, '');
}

/** A path as people read it in a warning: quoted when it holds control characters (a newline would split a log line). */
function shown(p: string): string {
  return /[\x00-\x1f\x7f]/.test(p) ? JSON.stringify(p) : p;
}

function utf8OrNull(bytes: Buffer): string | null {
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : null;
}

import { createWriteStream, lstatSync, type WriteStream } from 'node:fs';
import { chmod, lchown, lstat, lutimes, readFile, realpath, utimes } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Parser, ReadEntry, UnpackSync, type Unpack } from 'tar';
import { formatBytes, LifeboatError } from '@lifeboat/shared';
import { MANIFEST_ENTRY_NAME } from '../archive/tar-writer.js';
import { acquireCodec } from '../codec-pool.js';
import { handsOwnedChunks, wholeChunkOf } from '../download.js';
import { fnv1a32 } from '../fnv1a.js';
import { FileWriters } from './file-writers.js';
import { abortReason, fsReason, isCode, isFsError, shown, throttled } from '../fs-errors.js';
import type { JobContext, RestoreOptions } from '../sources/source.js';

/**
 * Guarded extraction of a tar stream into a prepared restore target (restore/target.ts).
 *
 * Restore uses node-tar's Unpack (strict, no preservePaths) behind a filter that refuses what must not be
 * written, then sets what node-tar leaves wrong: exact modes (umask, setgid, 0700 forced on directories),
 * directory mtimes (changed by their children), and symlinks' mtimes and owners.
 *
 * The backup's per-file manifest (the entry MANIFEST_ENTRY_NAME) is not part of the tree: it is never written
 * into the target; with options.keepManifestAt it is copied there instead, for a drill to check the tree with.
 */

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

/** Where to extract: the prepared target, by its real path and as the restore named it. */
export interface ExtractionTarget {
  /** The target's real path: what node-tar extracts into and what every containment check compares with. */
  root: string;
  /** The target as given: absolute link targets inside either this or root are inside the target. */
  path: string;
  /**
   * The target was empty when the restore began (made for it, or found empty): whatever is in it then, the
   * restore put there, so a path none of its entries took is free without a look (see PlacedPaths).
   */
  fresh?: boolean;
}

export interface Extracted {
  restored: number;
  restoredBytes: number;
  /** Entries deliberately not restored, each with why. */
  skipped: string[];
  /** The archive held the target itself ("./", as an archive of "/" does): the target's mode is set from it. */
  targetModeSet: boolean;
  /** Entries whose path was looked up before being made (in a fresh target only those an earlier entry took). */
  pathsLookedUp: number;
}

/**
 * Extracts the tar stream into target.root, then sets the modes, times and owners node-tar leaves wrong.
 * Refused entries are skipped and listed; a limit exceeded, a corrupt or truncated archive, a failed input
 * or a cancelled job fails it.
 */
export async function extractTar(input: Readable, target: ExtractionTarget, limits: FilesRestoreLimits, options: RestoreOptions, ctx: JobContext): Promise<Extracted> {
  const roots = [...new Set([target.root, path.posix.resolve(target.path)])];
  if (options.keepManifestAt !== undefined) {
    const keep = path.posix.resolve(options.keepManifestAt);
    if (partsUnderRoot(keep, roots) !== null) {
      throw new LifeboatError('restore_failed', `the manifest cannot be kept at ${shown(keep)}: it is inside the restore target`);
    }
  }
  const guard = new ExtractionGuard(roots, limits, fileModeCheck(await processUmask()), ctx);
  const pathsLookedUp = await extract(input, target.root, target.fresh === true, guard, options, ctx);
  await applyFixups(guard.fixups, target.root, options.preserveOwner, ctx);
  return { restored: guard.restored, restoredBytes: guard.restoredBytes, skipped: guard.skippedList(), targetModeSet: guard.fixups.has(''), pathsLookedUp };
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

  /** The entry's path under the target, normalized ("" for the target itself), when it may be extracted; null when not. */
  admit(entry: ReadEntry): string | null {
    this.seen.add(entry);
    if (this.failed) return null;
    const overLimit = this.countAgainstLimits(entry);
    if (overLimit) return this.fail(overLimit);
    // The backup's manifest, not part of the tree: left out without a word (ManifestCopy keeps it when asked).
    if (entry.path === MANIFEST_ENTRY_NAME) return null;
    const checked = splitEntryPath(entry.path);
    if (!checked.ok) return this.skip(entry.path, checked.reason);
    if (checked.parts.length > this.limits.maxDepth) {
      return this.fail(`entry ${shown(entry.path)} is ${checked.parts.length} directories deep, more than the limit of ${this.limits.maxDepth}`);
    }
    const refusal = this.refusal(entry, checked.parts);
    if (refusal) return this.skip(entry.path, refusal);
    return this.record(entry, checked.parts);
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

  private record(entry: ReadEntry, parts: string[]): string {
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
    return key;
  }

  /** An entry replaces whatever was at its path, and (node-tar's unlink mode) any symlink among its parents. */
  private forgetReplacedSymlinks(parts: string[]): void {
    if (this.symlinks.size === 0) return;
    for (let i = 1; i <= parts.length; i++) this.symlinks.delete(parts.slice(0, i).join('/'));
  }

  private skip(entryPath: string, reason: string): null {
    if (this.skipped.length < MAX_LISTED_SKIPS) {
      const line = `${shown(entryPath)}: ${reason}`;
      this.skipped.push(line);
      this.ctx.warn(`not restored: ${line}`);
    } else {
      this.unlistedSkips++;
    }
    return null;
  }

  private fail(message: string): null {
    this.failed = true;
    this.onFatal(new LifeboatError('restore_failed', message));
    return null;
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
  // A win32 root starts with a separator or is a drive ("c:"): only those few paths need the (costly) parse.
  const mayHaveRoot = p.startsWith('\\') || (p[1] === ':' && !p.startsWith('/'));
  return mayHaveRoot && path.win32.parse(p).root !== '';
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

/**
 * The absolute path of an entry's key (ExtractionGuard.admit) under the target's root. The key is normalized, so
 * joining is what path.join or path.resolve would give, without their per-call garbage.
 */
function pathOfKey(root: string, key: string): string {
  if (key === '') return root;
  return root.endsWith('/') ? root + key : `${root}/${key}`;
}

function partsUnderRoot(absolutePath: string, roots: readonly string[]): string[] | null {
  for (const root of roots) {
    if (absolutePath === root) return [];
    const prefix = root.endsWith('/') ? root : root + '/';
    if (absolutePath.startsWith(prefix)) return absolutePath.slice(prefix.length).split('/');
  }
  return null;
}

/** Extracts; returns how many entries' paths were looked up (DirectoryCachingUnpack.pathsLookedUp). */
async function extract(input: Readable, root: string, fresh: boolean, guard: ExtractionGuard, options: RestoreOptions, ctx: JobContext): Promise<number> {
  const unfinished = new UnfinishedEntries();
  const manifestCopy = options.keepManifestAt === undefined ? null : new ManifestCopy(options.keepManifestAt);
  const directories = new Set<string>();
  const writers = FileWriters.create();
  const unpack = new DirectoryCachingUnpack(directories, writers, fresh ? new PlacedPaths(root) : null, {
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
    filter: (_path, entry) => {
      if (!(entry instanceof ReadEntry)) return false;
      const key = guard.admit(entry);
      if (key === null) return false;
      // Something other than a directory replacing one made earlier (a symlink, say): check every parent again.
      if (entry.type !== 'Directory' && directories.has(pathOfKey(root, key))) directories.clear();
      return unfinished.track(entry);
    },
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
  manifestCopy?.onError(fail);
  let sawEndOfArchive = false;
  unpack.on('eof', () => (sawEndOfArchive = true));
  unpack.on('ignoredEntry', (entry: ReadEntry) => guard.ignored(entry));
  unpack.on('error', fail);
  const closed = new Promise<void>((resolve) => unpack.on('close', resolve));
  const onAbort = () => fail(abortReason(ctx.signal));
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  try {
    await feed(input, unpack, manifestCopy, failed, ctx);
    await Promise.race([closed, failed]);
    // Every handed file written (or the writers' failure, with the file's path) before the restore counts.
    writers?.barrier();
    if (writers && writers.shortBytes > 0 && sawEndOfArchive) {
      // Whole archive, files short: bytes went missing between the stream and the files. Never a restore that counts.
      throw new LifeboatError('integrity', `restored files came out ${writers.shortBytes} bytes short of the archive's sizes (first: ${shown(writers.shortFile!)}); the restore is not complete`);
    }
    if (manifestCopy) await Promise.race([manifestCopy.written(), failed]);
  } catch (err) {
    fail(err);
    throw failure;
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    manifestCopy?.close();
    await writers?.close();
  }
  // node-tar accepts an archive cut at an entry boundary as complete: the end-of-archive blocks prove it is not.
  if (!sawEndOfArchive) throw new LifeboatError('restore_failed', 'the archive is truncated: it ends without the end-of-archive marker');
  return unpack.pathsLookedUp;
}

/** A method node-tar keeps behind a symbol, found by the symbol's description along the prototype chain. */
function nodeTarMethod(description: string): symbol | undefined {
  for (let proto: object | null = UnpackSync.prototype; proto; proto = Object.getPrototypeOf(proto)) {
    const found = Object.getOwnPropertySymbols(proto).find((symbol) => symbol.description === description);
    if (found) return found;
  }
  return undefined;
}

/** node-tar's private methods this restore wraps or calls. */
const NODE_TAR = {
  /** Makes an entry's parent directories. */
  mkdir: nodeTarMethod('mkdir'),
  /** Checks what is at an entry's path and makes the entry. */
  checkFs: nodeTarMethod('checkFs'),
  /** Makes the entry, once checkFs found its path free (or cleared it). */
  makeFs: nodeTarMethod('makeFs'),
  /** Writes a regular file (replaced: the writer threads write them). */
  file: nodeTarMethod('file'),
  onError: nodeTarMethod('onError'),
  doChown: nodeTarMethod('doChown'),
  uid: nodeTarMethod('uid'),
  gid: nodeTarMethod('gid'),
};

/** Whether the directory cache below is in effect (node-tar still has the method it wraps). */
export const DIRECTORY_CACHE_IN_EFFECT = NODE_TAR.mkdir !== undefined;
/** Whether regular files can go to writer threads (node-tar still has every method that needs). */
const FILE_WRITERS_POSSIBLE = Object.values(NODE_TAR).every((symbol) => symbol !== undefined);
/** Whether a free path is found without an exception (node-tar still has the methods that needs). */
export const FAST_FREE_PATH = NODE_TAR.mkdir !== undefined && NODE_TAR.checkFs !== undefined && NODE_TAR.makeFs !== undefined && NODE_TAR.onError !== undefined;

type NodeTarInternals = Record<symbol, (...args: never[]) => unknown> & { fmode: number; dmode: number; noMtime: boolean; cwd: string };

/**
 * node-tar's synchronous Unpack, with three changes for speed; node-tar still checks every entry and makes
 * every directory and link itself.
 * - It remembers the directories it has made or found. For each entry node-tar walks the parent path from the
 *   target down, a mkdir and an lstat per level, about 14 system calls per file at depth 7; a parent already
 *   made in this restore is not walked again.
 * - An entry whose path is free is made without node-tar's lstat of it, which throws on a free path: in a
 *   fresh target that is every entry, and the exception (an Error with its stack) cost about 20 µs each, 1.5 s
 *   of a 70 000-file restore. The path is checked with an lstat that returns nothing instead; anything found
 *   there goes to node-tar's own check. In a target that was empty at the start (`placed`), a path no earlier
 *   entry took is not looked up at all: nothing else can be there. Those lstats cost the restore's thread about
 *   0.3 s of kernel time in a restore of the benchmark's corpus, some of it waiting on the lock of the
 *   directory the writer thread creates files in (bench/RESULTS.md). Anything that does appear there meanwhile
 *   is still met safely: files are created without following a symlink (file-writer-worker.ts), directories
 *   through node-tar's mkdir, which replaces what is in the way, and links and symlinks fail on a taken path.
 * - With `writers`, regular files are created and written by writer threads (file-writers.ts) while this
 *   thread parses and checks the next entries: small ones whole, large ones in parts as their bytes stream in.
 *   Entries that could depend on a file not yet written wait for the writers first (FileWriters.before).
 * Synchronous, entries are written as they are parsed, so memory holds no backlog however many files there are.
 */
class DirectoryCachingUnpack extends UnpackSync {
  /** Entries whose path was looked up before being made. */
  pathsLookedUp = 0;

  constructor(
    private readonly made: Set<string>,
    writers: FileWriters | null,
    private readonly placed: PlacedPaths | null,
    options: ConstructorParameters<typeof UnpackSync>[0],
  ) {
    super(options);
    const self = this as unknown as NodeTarInternals;
    if (NODE_TAR.mkdir) {
      const makeParents = self[NODE_TAR.mkdir]!.bind(this) as (dir: string, mode: number) => unknown;
      Object.defineProperty(this, NODE_TAR.mkdir, {
        value: (dir: string, mode: number): unknown => {
          if (this.made.has(dir)) return undefined;
          const error = makeParents(dir, mode);
          if (!error) this.made.add(dir);
          return error;
        },
      });
    }
    const handing = writers && FILE_WRITERS_POSSIBLE ? writers : null;
    if (handing) this.handFiles(handing, self);
    if (handing || FAST_FREE_PATH) this.checkPathsFirst(handing, self);
  }

  /** node-tar's checkFs, after the writers (an entry may depend on a file not yet written) and a cheap lstat. */
  private checkPathsFirst(writers: FileWriters | null, self: NodeTarInternals): void {
    const checkFs = self[NODE_TAR.checkFs!]!.bind(this) as (entry: ReadEntry) => unknown;
    const onError = self[NODE_TAR.onError!]!.bind(this) as (err: unknown, entry: ReadEntry) => unknown;
    const makeFs = FAST_FREE_PATH ? (self[NODE_TAR.makeFs!]!.bind(this) as (err: null, entry: ReadEntry) => unknown) : null;
    /** node-tar checks (and makes) the target itself on its first entry: that one always goes the full way. */
    let targetChecked = false;
    Object.defineProperty(this, NODE_TAR.checkFs!, {
      value: (entry: ReadEntry): unknown => {
        const absolute = String(entry.absolute);
        try {
          writers?.before(absolute, entryKind(entry));
        } catch (err) {
          return onError(err, entry);
        }
        const free = this.placed?.take(absolute) === true;
        if (!makeFs || !targetChecked || absolute === self.cwd) {
          targetChecked = true;
          this.pathsLookedUp++;
          return checkFs(entry);
        }
        // As node-tar does first: the parent directories (through the cache above).
        const parent = path.dirname(absolute);
        if (parent !== self.cwd) {
          const failed = (self[NODE_TAR.mkdir!] as unknown as (dir: string, mode: number) => unknown).call(this, parent, self.dmode);
          if (failed) return onError(failed, entry);
        }
        if (free) return makeFs(null, entry);
        this.pathsLookedUp++;
        if (lstatSync(absolute, { throwIfNoEntry: false }) === undefined) return makeFs(null, entry);
        return checkFs(entry);
      },
    });
  }

  private handFiles(writers: FileWriters, self: NodeTarInternals): void {
    const onError = self[NODE_TAR.onError!]!.bind(this) as (err: unknown, entry: ReadEntry) => unknown;
    const doChown = self[NODE_TAR.doChown!]!.bind(this) as (entry: ReadEntry) => boolean;
    const uid = self[NODE_TAR.uid!]!.bind(this) as (entry: ReadEntry) => number | undefined;
    const gid = self[NODE_TAR.gid!]!.bind(this) as (entry: ReadEntry) => number | undefined;
    Object.defineProperty(this, NODE_TAR.file!, {
      value: (entry: ReadEntry, done: () => void): unknown => {
        const mtimeMs = entry.mtime && !self.noMtime ? entry.mtime.getTime() : null;
        const owned = doChown(entry);
        const handed = writers.hand({
          path: String(entry.absolute),
          mode: typeof entry.mode === 'number' ? entry.mode & 0o7777 : self.fmode,
          size: entry.size,
          mtimeMs,
          // node-tar sets the access time to now when the archive has none.
          atimeMs: mtimeMs === null ? null : (entry.atime?.getTime() ?? Date.now()),
          uid: owned ? Number(uid(entry)) : null,
          gid: owned ? Number(gid(entry)) : null,
        });
        entry.on('data', (piece: Buffer) => handed.write(piece));
        entry.on('end', () => {
          try {
            handed.end();
          } catch (err) {
            onError(err, entry);
          }
          done();
        });
        return undefined;
      },
    });
  }
}

/**
 * The paths a restore into an empty target has put there: every entry's, and the directories above them (made on
 * the way). Kept as 30-bit hashes, which V8 stores unboxed (about 1 MiB for 70 000 paths), not as strings (several
 * MiB): a path never taken is certainly absent, and a collision (a few among 70 000) only costs a lookup.
 */
export class PlacedPaths {
  private readonly hashes = new Set<number>();
  /** The directory of the last path taken: its own and those above it are recorded already. */
  private lastParent = '';

  constructor(private readonly root: string) {}

  /** Records the path (and the directories above it, up to the root); true when nothing this restore placed was there. */
  take(absolute: string): boolean {
    const hash = pathHash30(absolute);
    const free = !this.hashes.has(hash);
    this.hashes.add(hash);
    // An archive lists a directory's entries together: the directories above are walked when the directory changes.
    const parent = path.posix.dirname(absolute);
    if (parent !== this.lastParent) {
      this.lastParent = parent;
      for (let dir = parent; dir.length > this.root.length && dir.startsWith(this.root); dir = path.posix.dirname(dir)) this.hashes.add(pathHash30(dir));
    }
    return free;
  }
}

/** A path's FNV-1a, cut to 30 bits (a small integer to V8). */
function pathHash30(text: string): number {
  return fnv1a32(text) >>> 2;
}

function entryKind(entry: ReadEntry): 'file' | 'directory' | 'other' {
  switch (entry.type) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
      return 'file';
    case 'Directory':
    case 'GNUDumpDir':
      return 'directory';
    default:
      return 'other';
  }
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

/**
 * Copies the archive's manifest entry to a file outside the target (RestoreOptions.keepManifestAt). A second,
 * read-only parse of the same bytes: Unpack never hands an entry it leaves out to anyone, and the one it
 * extracts it writes into the target. Only the first manifest entry is kept.
 */
class ManifestCopy {
  readonly parser: Parser;
  private copy: Promise<void> | null = null;
  private sink: WriteStream | null = null;
  private failure: (err: unknown) => void = () => {};

  constructor(private readonly file: string) {
    this.parser = new Parser({
      // Unpack, strict, is the judge of the archive; this parse only looks for one entry.
      strict: false,
      brotli: false,
      zstd: false,
      filter: (entryPath, entry) => entry instanceof ReadEntry && entryPath === MANIFEST_ENTRY_NAME && entry.type === 'File' && this.copy === null,
      onReadEntry: (entry) => this.keep(entry),
    });
    this.parser.on('error', () => {});
  }

  onError(fail: (err: unknown) => void): void {
    this.failure = fail;
  }

  /** Settles once the copy is on disk; at once when the archive had no manifest. */
  async written(): Promise<void> {
    await this.copy;
  }

  /** After the restore, however it ended: a copy cut short by a failure must not keep its file open. */
  close(): void {
    this.parser.abort(new Error('restore finished'));
    if (this.sink && !this.sink.writableFinished) this.sink.destroy();
  }

  private keep(entry: ReadEntry): void {
    if (this.copy !== null) {
      entry.resume();
      return;
    }
    const sink = createWriteStream(this.file, { flags: 'wx', mode: 0o600 });
    this.sink = sink;
    this.copy = finished(sink).catch((err: unknown) => {
      const error = new LifeboatError('restore_failed', `cannot write the backup's manifest to ${shown(this.file)}: ${fsReason(err)}`);
      this.failure(error);
      throw error;
    });
    this.copy.catch(() => {});
    entry.pipe(sink);
  }
}

/**
 * Input → node-tar at node-tar's pace (and the manifest copy's, if any); stops at the first failure. Written in
 * whole 512-byte blocks: node-tar keeps a piece's last partial block and joins it to the whole next piece with
 * Buffer.concat, which copied every chunk of the stream (content-defined chunks end anywhere) and held two of
 * the largest at once. Only the few bytes of a block that spans two chunks are copied here.
 */
async function feed(input: Readable, unpack: Unpack, manifestCopy: ManifestCopy | null, failed: Promise<never>, ctx: JobContext): Promise<void> {
  const report = throttled((bytes) => ctx.progress('extracting', bytes));
  let bytes = 0;
  const write = async (piece: Buffer) => {
    if (!unpack.write(piece)) await Promise.race([new Promise((resolve) => unpack.once('drain', resolve)), failed]);
    if (manifestCopy && !manifestCopy.parser.write(piece)) {
      await Promise.race([new Promise((resolve) => manifestCopy.parser.once('drain', resolve)), failed]);
    }
  };
  // node-tar takes whole blocks (so it keeps no remainder of a chunk), and a write that returned true (or drained)
  // left no entry with unread bytes: once its pieces are written, a chunk is node-tar's no more, and its memory
  // goes to a worker thread, where it is freed young; freed here it counts toward this thread's next full
  // collection (two thirds of a restore's, bench/RESULTS.md). Only chunks the input gives away (a download's), and
  // not with a manifest copy, which writes later.
  const codec = !manifestCopy && handsOwnedChunks(input) ? acquireCodec() : null;
  // Past the end-of-archive blocks node-tar keeps what follows them: from there on nothing moves.
  let ended = false;
  unpack.once('eof', () => (ended = true));
  try {
    const blocks = new BlockAligner();
    for await (const chunk of input as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      report(bytes);
      for (const piece of blocks.push(chunk)) await write(piece);
      if (!ended) codec?.discard(wholeChunkOf(chunk));
      // A turn of the event loop between chunks: the next chunks' frames and decoded results are taken in while
      // this one is written, instead of only once the stream has run dry.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    // A partial last block: the archive is truncated, and node-tar says so.
    const rest = blocks.rest();
    if (rest) await write(rest);
  } finally {
    codec?.release();
  }
  ctx.progress('extracting', bytes);
  unpack.end();
  manifestCopy?.parser.end();
}

const TAR_BLOCK = 512;

/** Cuts a stream into pieces of whole tar blocks: a block that spans two inputs is joined, nothing else is copied. */
export class BlockAligner {
  private tail: Buffer | null = null;

  push(chunk: Buffer): Buffer[] {
    const pieces: Buffer[] = [];
    let at = 0;
    if (this.tail) {
      const need = TAR_BLOCK - this.tail.length;
      if (chunk.length < need) {
        this.tail = Buffer.concat([this.tail, chunk]);
        return pieces;
      }
      pieces.push(Buffer.concat([this.tail, chunk.subarray(0, need)]));
      this.tail = null;
      at = need;
    }
    const end = at + Math.floor((chunk.length - at) / TAR_BLOCK) * TAR_BLOCK;
    if (end > at) pieces.push(chunk.subarray(at, end));
    // Copied, so the chunk it came from is not kept alive for a few hundred bytes.
    if (end < chunk.length) this.tail = Buffer.from(chunk.subarray(end));
    return pieces;
  }

  /** What is left: part of a block, or null. */
  rest(): Buffer | null {
    const tail = this.tail;
    this.tail = null;
    return tail;
  }
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
    const target = pathOfKey(root, key);
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

/** Any failure of a restore as a LifeboatError: node-tar's errors said as people read them, with the entry at fault. */
export function restoreError(err: unknown): LifeboatError {
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

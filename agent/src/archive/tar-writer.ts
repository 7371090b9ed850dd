import { createHash, type Hash } from 'node:crypto';
import { closeSync, constants as fsConstants, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { lstat, mkdtemp, open, readFile, readlink, rm, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Minimatch } from 'minimatch';
import { Header, Pax, type HeaderData } from 'tar';
import { appendChunkUse, ChunkListSlicer, FILE_SEGMENT, GarbageMeter, LifeboatError, usedBytes, type ArtifactMetadata, type ChunkUse } from '@lifeboat/shared';
import { fnv1a32 } from '../fnv1a.js';
import { abortReason, fsReason, isCode, isFsError, shown, throttled } from '../fs-errors.js';
import { encodeUstar, encodeWithPaxMtime, type UstarFields } from './ustar.js';
import type { JobContext, StreamPiece } from '../sources/source.js';
import { FilesCache, manifestText, type ManifestLine, type SegmentRecord, type StoredEntry, type StoredManifest } from './files-cache.js';

/**
 * The backup half of the files source: walks the listed paths and produces their tar stream.
 *
 * Backup walks the tree itself and writes the tar with node-tar's Header and Pax encoders. node-tar's own
 * `create` cannot be used: it stops the whole archive (an 'error', then a stalled stream) on the first
 * unreadable or vanished file, and on a file that grows while it is read — a live log file.
 *
 * The stream is cut into segments (FILE_SEGMENT in shared/src/chunker.ts): each large file's entry is a
 * segment of its own, and the small entries between them form groups whose ends depend only on the entries'
 * names and sizes. A chunk never spans two segments, so an edited small file costs one small group, not a 1 MiB
 * chunk, and the files cache (files-cache.ts) can reuse an unchanged segment's chunks without reading it.
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

export type { ManifestLine };

/** Manifest lines are written to the spool file in pieces of about this size. */
const SPOOL_FLUSH_BYTES = 64 * 1024;

interface Archiver {
  signal: AbortSignal;
  warn(message: string): void;
  isExcluded(absolutePath: string): boolean;
  /** dev:ino of files with several links → the entry name of the copy archived first. */
  hardlinks: Map<string, string>;
  owners: OwnerNames;
  counts: Counts;
  manifest: ManifestSpool;
  cache: FilesCache | null;
  /** Files read, and files whose segment was reused unread. */
  filesRead: number;
  filesReused: number;
  /** Where large files are read into, piece by piece: pieces are lent (StreamPiece), so one buffer serves all. */
  readBuffer: Buffer;
}

/** An entry of a segment, planned from its lstat: what it is and its header, before any content is read. */
interface PlannedEntry {
  path: string;
  /** 'large-file-header': only the header of a large file, whose content is a segment of its own. */
  kind: 'file' | 'directory' | 'symlink' | 'hardlink' | 'large-file-header';
  info: Stats;
  header: Buffer;
  /** The symlink's target, or for a hard link the entry name of the copy archived first. */
  link?: string;
}

/** The tar stream of the listed paths, and what it holds once it has been read to the end. */
export interface TarArchive {
  /** The listed paths, resolved, without those inside another listed path: the trees archived, in order. */
  roots: string[];
  /** The archive with its seams (segment ends, reused chunks): what the upload reads. */
  pieces: AsyncIterable<StreamPiece>;
  /** The archive's bytes, for a reader without the files cache (made on first use; read it or `pieces`, never both). */
  readonly stream: Readable;
  /** Settles after the archive has ended, as BackupStream's metadata does. */
  metadata: Promise<FilesMetadata>;
  /** The private directory the manifest is spooled in while the archive is written; gone once `metadata` settled. */
  manifestSpool: string;
  /** Keeps the new files cache when the artifact was stored, drops it otherwise. */
  settle(stored: boolean): Promise<void>;
  /** How many files were read, and how many were reused from the files cache unread. */
  readonly reads: { filesRead: number; filesReused: number };
}

/**
 * Archives paths on this agent, leaving out what the exclude globs (minimatch, matched against absolute
 * paths) match. Fails before any byte moves when a listed path is missing. With `ctx.filesCache`, segments
 * unchanged since the previous backup of this plan step are not read: their chunks are reused.
 */
export async function archivePaths(paths: readonly string[], exclude: readonly string[], ctx: JobContext): Promise<TarArchive> {
  if (ctx.signal.aborted) throw abortReason(ctx.signal);
  const listed = [...new Set(paths.map((p) => path.posix.resolve(p)))];
  for (const p of listed) await checkRoot(p, ctx);
  const roots = withoutNested(listed);
  const patterns = exclude.map((glob) => new Minimatch(glob, { dot: true }));
  const counts: Counts = { entries: 0, files: 0, directories: 0, symlinks: 0, fileBytes: 0 };
  const owners = await readOwnerNames();
  const cache = ctx.filesCache ? await FilesCache.open(ctx.filesCache) : null;
  // Last, so nothing that can still fail before the stream exists leaves the spool behind.
  const manifest = await ManifestSpool.create().catch((err: unknown) => {
    cache?.discard();
    throw err;
  });
  const archiver: Archiver = {
    signal: ctx.signal,
    warn: (message) => ctx.warn(message),
    isExcluded: (p) => patterns.some((pattern) => pattern.match(p)),
    hardlinks: new Map(),
    owners,
    counts,
    manifest,
    cache,
    filesRead: 0,
    filesReused: 0,
    readBuffer: Buffer.allocUnsafeSlow(READ_BYTES),
  };
  let settleMetadata!: { resolve: (m: FilesMetadata) => void; reject: (e: unknown) => void };
  const metadata = new Promise<FilesMetadata>((resolve, reject) => (settleMetadata = { resolve, reject }));
  // The consumer reads `metadata` after the stream; a failure before then must not be an unhandled rejection.
  metadata.catch(() => {});

  // Pull-based: the generator runs only as fast as the consumer reads, so memory stays near one read buffer.
  async function* tracked(): AsyncGenerator<StreamPiece> {
    let complete = false;
    let failure: unknown = null;
    try {
      yield* reportProgress(archive(roots, archiver), ctx);
      complete = true;
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      // However the backup ended: the metadata settles only once the spool is gone.
      await manifest.remove();
      if (complete) settleMetadata.resolve({ kind: 'files', paths: roots, ...counts, manifest: manifest.recorded() });
      else {
        const reason = failure ?? (ctx.signal.aborted ? abortReason(ctx.signal) : new LifeboatError('source_failed', 'the archive stream was closed before it was complete'));
        settleMetadata.reject(backupError(reason, ctx.signal));
      }
    }
  }
  const pieces = tracked();
  let stream: Readable | null = null;
  return {
    roots,
    pieces,
    get stream() {
      if (!stream) {
        stream = Readable.from(bytesOf(pieces), { objectMode: false, highWaterMark: READ_BYTES });
        const made = stream;
        const onAbort = () => made.destroy(abortReason(ctx.signal));
        ctx.signal.addEventListener('abort', onAbort, { once: true });
        made.once('close', () => ctx.signal.removeEventListener('abort', onAbort));
      }
      return stream;
    },
    metadata,
    manifestSpool: manifest.dir,
    reads: archiver,
    async settle(stored) {
      if (!cache) return;
      if (stored) await cache.commit();
      else cache.discard();
    },
  };
}

/** The bytes alone, for a reader that keeps no files cache (and so is never given reused chunks). */
async function* bytesOf(pieces: AsyncIterable<StreamPiece>): AsyncGenerator<Buffer> {
  for await (const piece of pieces) {
    // A Readable keeps what it is given until read: a lent piece is copied.
    if (Buffer.isBuffer(piece)) yield Buffer.from(piece);
    else if (piece.type === 'reused') throw new LifeboatError('internal', 'reused chunks in an archive read as plain bytes');
  }
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

async function* archive(roots: readonly string[], a: Archiver): AsyncGenerator<StreamPiece> {
  try {
    for (const [index, root] of roots.entries()) yield* archiveTree(index, root, a);
    if (a.counts.entries === 0) {
      throw new LifeboatError('source_failed', `nothing was archived from ${roots.join(', ')}: every path was excluded, unreadable or vanished`);
    }
    yield* a.manifest.archiveEntry(a.signal, a.cache);
  } finally {
    await a.manifest.close();
  }
}

/**
 * Depth-first, children in sorted order: the same tree gives the same archive, which deduplicates best, and
 * the files cache's records come in this order. The walk's own system calls are synchronous: they are answered
 * from the kernel's caches in microseconds, far less than a trip through the thread pool would cost.
 */
async function* archiveTree(rootIndex: number, root: string, a: Archiver): AsyncGenerator<StreamPiece> {
  const group = new SmallEntryGroup(rootIndex);
  const pending = [root];
  while (pending.length > 0) {
    if (a.signal.aborted) throw abortReason(a.signal);
    const p = pending.pop()!;
    if (a.isExcluded(p)) continue;
    const info = orWarn(p, a, () => lstatSync(p));
    if (!info) continue;
    let planned: PlannedEntry | null = null;
    if (info.isDirectory()) {
      const name = entryName(p);
      planned = plan(p, 'directory', info, { name: name === '' ? './' : name + '/', type: 'Directory', info, size: 0 }, a);
      const children = planned ? listDirectory(p, a) : [];
      for (let i = children.length - 1; i >= 0; i--) pending.push(path.posix.join(p, children[i]!));
    } else if (info.isFile()) {
      const firstCopy = info.nlink > 1 ? a.hardlinks.get(`${info.dev}:${info.ino}`) : undefined;
      if (firstCopy !== undefined) {
        planned = plan(p, 'hardlink', info, { name: entryName(p), type: 'Link', info, size: 0, linkpath: firstCopy }, a, firstCopy);
      } else {
        planned = plan(p, 'file', info, { name: entryName(p), type: 'File', info, size: info.size }, a);
        if (planned && info.nlink > 1) a.hardlinks.set(`${info.dev}:${info.ino}`, entryName(p));
        if (planned && info.size >= FILE_SEGMENT.largeFile) {
          // The header ends the current group and the content is a segment of its own: a change to the file
          // then rewrites a small group and its changed chunks, never the content's first chunk for a new mtime.
          group.add({ ...planned, kind: 'large-file-header' });
          yield* group.flush(a);
          yield* largeFileContent(rootIndex, planned, a);
          continue;
        }
      }
    } else if (info.isSymbolicLink()) {
      const raw = orWarn(p, a, () => readlinkSync(p, { encoding: 'buffer' }));
      const linkpath = raw ? utf8OrNull(raw) : null;
      if (raw && linkpath === null) a.warn(`skipped ${shown(p)}: its link target is not valid UTF-8`);
      if (linkpath !== null) planned = plan(p, 'symlink', info, { name: entryName(p), type: 'SymbolicLink', info, size: 0, linkpath }, a, linkpath);
    } else {
      a.warn(`skipped ${shown(p)}: ${specialKind(info)} are not backed up`);
    }
    if (planned && group.add(planned)) yield* group.flush(a);
  }
  yield* group.flush(a);
}

function plan(p: string, kind: PlannedEntry['kind'], info: Stats, fields: EntryFields, a: Archiver, link?: string): PlannedEntry | null {
  const header = encodeHeader(fields, a);
  return header ? { path: p, kind, info, header, ...(link !== undefined ? { link } : {}) } : null;
}

function listDirectory(p: string, a: Archiver): string[] {
  const raw = orWarn(p, a, () => readdirSync(p, { encoding: 'buffer' }), ' (the directory is archived without its contents)');
  if (!raw) return [];
  const names: string[] = [];
  for (const bytes of raw) {
    const name = utf8OrNull(bytes);
    if (name === null) a.warn(`skipped ${shown(path.posix.join(p, bytes.toString('utf8')))}: its name is not valid UTF-8, which this archive format does not carry`);
    else names.push(name);
  }
  return names.sort();
}

/** What decides a file's content, beside its header: its identity and times (restic's and borg's test of a change). */
function contentIdentity(info: Stats): string {
  return `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}\n`;
}

/** What decides a segment's bytes: each entry's header, and for a file the identity and times of its content. */
class SegmentKey {
  private readonly hash = createHash('sha256');
  add(header: Buffer, info: Stats | null): void {
    this.hash.update(header);
    if (info) this.hash.update(contentIdentity(info));
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

/** The same for one entry of a group (128 bits of it): the files cache keeps an unchanged entry of a changed group by it. */
function entryKey(header: Buffer, info: Stats | null): string {
  const hash = createHash('sha256').update(header);
  if (info) hash.update(contentIdentity(info));
  return hash.digest('hex').slice(0, 32);
}

/**
 * When a group changed, its unchanged entries are kept from the chunks that stored them (slices of chunks,
 * protocol.ts ChunkUse) and only the changed ones are read and stored anew: an edited 4 KiB file then costs its
 * own bytes, not its whole group's. A group is read whole again instead (one new chunk, no slices) when keeping
 * would list it in more than `maxPieces` pieces, keep less than `minKeptShare` of its bytes, or use less than
 * `minShareOfChunks` of the chunks it keeps from. A chunk a slice uses stays stored whole, with the bytes of
 * files since replaced or deleted: the pieces and the shares bound that dead weight (each file edited in a group
 * adds up to two pieces, so after a few the group is stored whole again), and files-cache.ts KEEP_SLICES_MS
 * bounds how long an unchanged group goes on keeping it. On the 1 GiB benchmark's day of change, 16 pieces
 * rather than 8 kept 1.5 MiB more of 9 groups (42.4 → 42.1 MiB stored) for 79 more chunk uses; a quarter rather
 * than half for `minKeptShare` gained nothing.
 */
const KEEP_ENTRIES = { maxPieces: 16, minKeptShare: 0.5, minShareOfChunks: 0.25 } as const;

/**
 * Small entries (directories, links, files under FILE_SEGMENT.largeFile) gathered into one segment. A group
 * ends after an entry once it holds `groupMin` bytes, with a chance proportional to the entry's size decided by
 * a hash of its path (so an insertion or an edit moves only the boundaries around it), and always at `groupMax`.
 */
class SmallEntryGroup {
  private entries: PlannedEntry[] = [];
  private bytes = 0;

  constructor(private readonly rootIndex: number) {}

  /** Adds an entry; true when the group should end after it. */
  add(entry: PlannedEntry): boolean {
    const entryBytes = plannedBytes(entry);
    this.entries.push(entry);
    this.bytes += entryBytes;
    if (this.bytes >= FILE_SEGMENT.groupMax) return true;
    if (this.bytes < FILE_SEGMENT.groupMin) return false;
    return fnv1a32(entry.path) < (entryBytes / (FILE_SEGMENT.groupAverage - FILE_SEGMENT.groupMin)) * 0x1_0000_0000;
  }

  async *flush(a: Archiver): AsyncGenerator<StreamPiece> {
    const entries = this.entries;
    if (entries.length === 0) return;
    this.entries = [];
    this.bytes = 0;
    const first = entries[0]!.path;
    const planned = new SegmentKey();
    for (const e of entries) planned.add(e.header, e.kind === 'file' ? e.info : null);
    const key = planned.digest();
    const reused = a.cache?.lookup(this.rootIndex, first, key);
    if (reused) return yield* reuse(this.rootIndex, reused, entries.filter((e) => e.kind === 'file').length, a);
    yield* writeGroup(this.rootIndex, entries, a.cache ? groupHistory(this.rootIndex, entries, a.cache) : null, a);
  }
}

/** What the previous backup stored of a changed group's entries, and which of them can be kept as stored. */
interface GroupHistory {
  /** The previous backup's entries around the group, by path: where their manifest lines were, at least. */
  stored: Map<string, StoredEntry>;
  /** For each entry, as stored (null for those to read); null when the group is to be read whole. */
  kept: (StoredEntry | null)[] | null;
}

/** What the previous backup stored of a changed group (GroupHistory). */
function groupHistory(rootIndex: number, entries: readonly PlannedEntry[], cache: FilesCache): GroupHistory {
  const lastListed = entries.findLast((e) => e.kind !== 'large-file-header');
  // The large file a header announces is a segment of its own, after the group: its record is not looked at here.
  const stored = lastListed ? cache.entriesAround(rootIndex, entries[0]!.path, lastListed.path) : new Map<string, StoredEntry>();
  return { stored, kept: keptEntries(entries, stored) };
}

/**
 * Which entries of a changed group can be kept as stored (null for those to read), or null when the group is
 * to be read whole (nothing to keep, or keeping would fragment it: KEEP_ENTRIES).
 */
function keptEntries(entries: readonly PlannedEntry[], stored: Map<string, StoredEntry>): (StoredEntry | null)[] | null {
  if (stored.size === 0) return null;
  const kept = entries.map((e) => {
    if (e.kind === 'large-file-header') return null;
    const known = stored.get(e.path);
    return known && known.key === entryKey(e.header, e.kind === 'file' ? e.info : null) ? known : null;
  });
  // Each run of entries to read becomes a chunk; each run of kept ones, its slices (neighbours joined).
  let pieces = 0;
  let run: ChunkUse[] = [];
  let keptBytes = 0;
  const keptFrom = new Map<string, number>();
  for (const [i, k] of kept.entries()) {
    if (!k) {
      pieces += run.length;
      run = [];
      if (i === 0 || kept[i - 1]) pieces++;
      continue;
    }
    keptBytes += k.bytes;
    for (const c of k.chunks) {
      appendChunkUse(run, c);
      keptFrom.set(c.id, c.size);
    }
  }
  pieces += run.length;
  const groupBytes = entries.reduce((n, e) => n + plannedBytes(e), 0);
  const fromBytes = [...keptFrom.values()].reduce((n, size) => n + size, 0);
  if (keptBytes === 0 || pieces > KEEP_ENTRIES.maxPieces || keptBytes < groupBytes * KEEP_ENTRIES.minKeptShare) return null;
  if (keptBytes < fromBytes * KEEP_ENTRIES.minShareOfChunks) return null;
  return kept;
}

/**
 * A group's entries in the archive: those in `kept` as the slices of stored chunks that hold them, the others
 * read (each run of them a segment of its own, so it becomes chunks of its own). The files cache records the
 * group with each entry's key and size, so a later change to it can keep its unchanged entries in turn.
 */
async function* writeGroup(rootIndex: number, entries: readonly PlannedEntry[], history: GroupHistory | null, a: Archiver): AsyncGenerator<StreamPiece> {
  const kept = history?.kept ?? null;
  /** Where the previous manifest has this very line, so the manifest can keep it even though its entry was read. */
  const lineAt = (line: ManifestLine): number | null => {
    const old = history?.stored.get(line.path);
    return old && old.lineAt !== null && manifestText(old.line) === manifestText(line) ? old.lineAt : null;
  };
  const lines: ManifestLine[] = [];
  const manifestAt = a.manifest.bytes;
  const entryItems: string[] = [];
  const archived = new SegmentKey();
  let cacheable = true;
  const parts = new ChunkListParts();
  let keptRun: ChunkUse[] = [];
  let out: SegmentBuffer | null = null;
  /** The planned bytes of the entries to read from `i` to the next kept one: what a run's buffer is sized for. */
  const runBytes = (i: number) => {
    let bytes = 0;
    for (let j = i; j < entries.length && !kept?.[j]; j++) bytes += plannedBytes(entries[j]!);
    return bytes;
  };
  const endRead = (): StreamPiece => {
    out = null;
    return parts.cut();
  };
  for (const [i, e] of entries.entries()) {
    if (a.signal.aborted) throw abortReason(a.signal);
    const k = kept?.[i];
    if (k) {
      if (out) {
        yield* out.drain();
        yield endRead();
      }
      for (const c of k.chunks) appendChunkUse(keptRun, c);
      archived.add(e.header, e.kind === 'file' ? e.info : null);
      entryItems.push(`${k.key}:${k.bytes}`);
      if (e.kind === 'file') a.filesReused++;
      await note(a, lines, k.line, k.lineAt);
      continue;
    }
    if (keptRun.length > 0) {
      // Reused chunks follow a segment end (the chunker is empty): they go in stream order.
      yield parts.kept(keptRun);
      keptRun = [];
    }
    out ??= new SegmentBuffer(runBytes(i));
    out.planned -= plannedBytes(e);
    if (e.kind === 'large-file-header') {
      // Its content follows as the next segment, which counts the file and lists it in the manifest.
      out.append(e.header);
      archived.add(e.header, null);
      continue;
    }
    if (e.kind !== 'file') {
      out.append(e.header);
      archived.add(e.header, null);
      entryItems.push(`${entryKey(e.header, null)}:${e.header.length}`);
      const line = lineOf(e);
      await note(a, lines, line, lineAt(line));
      continue;
    }
    const read = readSmallFile(e, a, out);
    a.filesRead++;
    if (!read) {
      cacheable = false;
      continue;
    }
    archived.add(read.header, read.info);
    cacheable &&= read.complete;
    entryItems.push(`${read.complete ? entryKey(read.header, read.info) : ''}:${read.bytes}`);
    const line: ManifestLine = { path: e.path, type: 'file', size: read.info.size, sha256: read.sha256 };
    await note(a, lines, line, lineAt(line));
  }
  if (keptRun.length > 0) yield parts.kept(keptRun);
  if (out) {
    yield* out.drain();
    yield endRead();
  }
  const cache = a.cache;
  if (!cache || !cacheable) return;
  const chunks = parts.list();
  if (!chunks) return;
  // Keeping entries from older chunks started when the oldest of the groups they were kept from started to.
  const since = kept?.reduce((min, k) => (k ? Math.min(min, k.keptSince ?? Infinity) : min), Infinity);
  const keptSince = kept ? (Number.isFinite(since) ? since : cache.now()) : undefined;
  cache.record(rootIndex, entries[0]!.path, archived.digest(), chunks, lines, { entries: entryItems.join(','), keptSince, manifestAt });
}

/**
 * A segment's chunk list put together in stream order from its parts: kept chunks as they are, and the chunks
 * each run of new bytes became (known once the upload has cut and hashed it).
 */
class ChunkListParts {
  private readonly parts: (readonly ChunkUse[] | Promise<ChunkUse[]> | null)[] = [];

  /** Ends a run of new bytes; its chunks take this place in the list. */
  cut(): StreamPiece {
    const slot = this.parts.push(null) - 1;
    return { type: 'segment-end', onChunks: (chunks) => (this.parts[slot] = chunks) };
  }

  /** Kept chunks, as the stream's next piece (after a segment end: the chunker is empty). */
  kept(chunks: readonly ChunkUse[]): StreamPiece {
    this.parts.push(chunks);
    return { type: 'reused', chunks };
  }

  /** The whole list; null when a reader never reported a run's chunks (then nothing is recorded). */
  list(): Promise<ChunkUse[]> | null {
    if (this.parts.some((part) => part === null)) return null;
    return Promise.all(this.parts as (readonly ChunkUse[] | Promise<ChunkUse[]>)[]).then((all) => {
      const list: ChunkUse[] = [];
      for (const part of all) for (const c of part) appendChunkUse(list, c);
      return list;
    });
  }
}

/** An entry's bytes in the archive as planned from its lstat: header, and a small file's padded content. */
function plannedBytes(e: PlannedEntry): number {
  return e.header.length + (e.kind === 'file' ? padded(e.info.size) : 0);
}

function padded(size: number): number {
  return size + paddingOf(size);
}

/** The zeros that fill a file's content up to a whole tar block. */
function paddingOf(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/**
 * A group's bytes, headers and contents written into one buffer of the planned size (files are read straight
 * into it): one piece per group instead of two per file, and no buffer per file. A file that grew since the walk
 * saw it may not fit; what is filled then becomes a piece of its own and the rest goes on in a new buffer.
 */
class SegmentBuffer {
  private buffer: Buffer;
  private used = 0;
  private readonly filled: Buffer[] = [];

  /** `planned`: the bytes of the entries not yet written (the caller counts them down). */
  constructor(public planned: number) {
    this.buffer = SegmentBuffer.allocate(planned);
  }

  /**
   * A buffer for the group's bytes, counted toward the walk's collections: it is garbage once the chunker has
   * copied it, and chunk buffers, which are freed at once (shared/src/memory.ts freeNow), no longer prompt the
   * collections that swept these (uncounted, the agent peaked at 151 MiB).
   */
  private static allocate(bytes: number): Buffer {
    walkGarbage.add(bytes);
    return Buffer.allocUnsafe(bytes);
  }

  /** Room for `bytes` more, at the returned offset of `this.target`; nothing counts as written until `commit`. */
  reserve(bytes: number): number {
    if (this.used + bytes > this.buffer.length) {
      if (this.used > 0) this.filled.push(this.buffer.subarray(0, this.used));
      this.buffer = SegmentBuffer.allocate(bytes + this.planned);
      this.used = 0;
    }
    return this.used;
  }

  get target(): Buffer {
    return this.buffer;
  }

  commit(bytes: number): void {
    this.used += bytes;
  }

  append(bytes: Buffer): void {
    bytes.copy(this.buffer, this.reserve(bytes.length));
    this.commit(bytes.length);
  }

  /** The pieces, in order; the buffers are the stream's from here on. */
  *drain(): Generator<Buffer> {
    yield* this.filled;
    if (this.used > 0) yield this.buffer.subarray(0, this.used);
  }
}

/** The end of a segment that was read; the files cache records it when its content is what its key says. */
function segmentEnd(a: Archiver, rootIndex: number, first: string, key: string | null, lines: ManifestLine[], manifestAt: number): StreamPiece {
  const cache = a.cache;
  if (!cache || key === null) return { type: 'segment-end' };
  return { type: 'segment-end', onChunks: (chunks) => cache.record(rootIndex, first, key, chunks, lines, { manifestAt }) };
}

/** A segment unchanged since the previous backup: its chunks again, its manifest lines and counts from the cache. */
async function* reuse(rootIndex: number, record: SegmentRecord, files: number, a: Archiver): AsyncGenerator<StreamPiece> {
  const manifestAt = a.manifest.bytes;
  let lineAt = record.manifestAt ?? null;
  for (const line of record.manifest) {
    const length = await note(a, [], line, lineAt);
    if (lineAt !== null) lineAt += length;
  }
  a.filesReused += files;
  a.cache!.record(rootIndex, record.first, record.key, Promise.resolve(record.chunks), record.manifest, { entries: record.entries, keptSince: record.keptSince, manifestAt });
  yield { type: 'reused', chunks: record.chunks };
}

function lineOf(e: PlannedEntry): ManifestLine {
  if (e.kind === 'directory') return { path: e.path, type: 'directory' };
  if (e.kind === 'symlink') return { path: e.path, type: 'symlink', target: e.link! };
  return { path: e.path, type: 'hardlink', target: '/' + e.link! };
}

/**
 * Walking a tree makes small garbage (stat results, headers, manifest lines, cache records) but no large buffers,
 * so nothing else would prompt a collection: about this much per entry, counted so the heap stays small.
 */
const GARBAGE_PER_ENTRY = 2048;
const walkGarbage = new GarbageMeter(4 * 1024 * 1024, 64 * 1024 * 1024);

/**
 * Counts an archived entry and adds its manifest line; `lineAt`, where the previous archive's manifest has the
 * same line (null if it is new or its place is not known). Returns the line's length in the manifest.
 */
async function note(a: Archiver, lines: ManifestLine[], line: ManifestLine, lineAt: number | null = null): Promise<number> {
  walkGarbage.add(GARBAGE_PER_ENTRY);
  a.counts.entries++;
  if (line.type === 'file' || line.type === 'hardlink') a.counts.files++;
  if (line.type === 'file') a.counts.fileBytes += line.size;
  if (line.type === 'directory') a.counts.directories++;
  if (line.type === 'symlink') a.counts.symlinks++;
  lines.push(line);
  return a.manifest.add(line, lineAt);
}

interface ReadFile {
  header: Buffer;
  info: Stats;
  sha256: string;
  /** Its bytes in the archive: header, content and padding. */
  bytes: number;
  /** False when the file changed or could not be read whole (the archived copy is still the promised size). */
  complete: boolean;
}

/**
 * A small file read whole in a few synchronous calls, its header and padded content written to `out`; null
 * (with a warning, and nothing written) when it cannot be archived.
 */
function readSmallFile(e: PlannedEntry, a: Archiver, out: SegmentBuffer): ReadFile | null {
  const fd = orWarn(e.path, a, () => openSync(e.path, OPEN_FOR_READING));
  if (fd === undefined) return null;
  try {
    // The header describes what is read: the opened file's fstat, not the earlier lstat.
    const info = fstatSync(fd);
    if (!info.isFile()) {
      a.warn(`skipped ${shown(e.path)}: it was replaced by something else during the backup`);
      return null;
    }
    // A file that grew past the small-file size since the walk saw it is cut: it is read in one go.
    const limit = FILE_SEGMENT.largeFile * 4;
    const size = Math.min(info.size, limit);
    if (info.size > limit) a.warn(`${shown(e.path)} grew from ${e.info.size} to ${info.size} bytes during the backup; the archived copy is cut at ${size} bytes`);
    // The header planned from the lstat serves when the opened file matches it in all a header holds (the
    // usual case): encoding one makes about 4 KB of garbage, a tenth of a backup's.
    const asPlanned = size === e.info.size && info.mtimeMs === e.info.mtimeMs && info.mode === e.info.mode && info.uid === e.info.uid && info.gid === e.info.gid;
    const header = asPlanned ? e.header : encodeHeader({ name: entryName(e.path), type: 'File', info, size }, a);
    if (!header) return null;
    const contentBytes = padded(size);
    const at = out.reserve(header.length + contentBytes);
    const target = out.target;
    header.copy(target, at);
    const content = target.subarray(at + header.length, at + header.length + contentBytes);
    let done = 0;
    let complete = size === info.size;
    while (done < size) {
      let n: number;
      try {
        n = readSync(fd, content, done, size - done, done);
      } catch (err) {
        if (!isFsError(err)) throw err;
        a.warn(`cannot read ${shown(e.path)}: ${fsReason(err)} at byte ${done} of ${size}; the archived copy is padded with zeros from there`);
        break;
      }
      if (n === 0) {
        a.warn(`${shown(e.path)} shrank from ${size} to ${done} bytes while being read; the archived copy is padded with zeros`);
        break;
      }
      done += n;
    }
    if (done < size) complete = false;
    content.fill(0, done);
    const sha256 = createHash('sha256').update(content.subarray(0, size)).digest('hex');
    const after = fstatSync(fd);
    if (after.size !== info.size || after.mtimeMs !== info.mtimeMs) {
      a.warn(`${shown(e.path)} changed while being read; the archived copy may mix old and new content`);
      complete = false;
    }
    out.commit(header.length + content.length);
    return { header, info, sha256, bytes: header.length + content.length, complete };
  } finally {
    closeSync(fd);
  }
}

/**
 * A large file's content (its header ended the group before): a segment of its own, read in pieces. Exactly the
 * size the header promised is archived, whatever happens to the file meanwhile; its chunks are reused unread
 * while its key (header, inode, times) is unchanged.
 */
async function* largeFileContent(rootIndex: number, e: PlannedEntry, a: Archiver): AsyncGenerator<StreamPiece> {
  const planned = new SegmentKey();
  planned.add(e.header, e.info);
  const key = planned.digest();
  const reused = a.cache?.lookup(rootIndex, e.path, key);
  if (reused) return yield* reuse(rootIndex, reused, 1, a);
  a.filesRead++;
  const size = e.info.size;
  const hash = createHash('sha256');
  const lines: ManifestLine[] = [];
  let unchanged = false;
  const handle = await orWarnAsync(e.path, a, () => open(e.path, OPEN_FOR_READING), '; its archived copy is zeros');
  try {
    const opened = handle ? await handle.stat() : null;
    const same = opened !== null && opened.isFile() && opened.size === size && opened.mtimeMs === e.info.mtimeMs;
    if (opened && !opened.isFile()) a.warn(`${shown(e.path)} was replaced by something else during the backup; its archived copy is zeros`);
    else if (opened && !same) a.warn(`${shown(e.path)} changed between the walk and its reading; the archived copy may mix old and new content`);
    const complete = yield* fileContent(opened?.isFile() ? handle! : null, size, e.path, a, hash);
    unchanged = same && complete && (await unchangedWhileRead(handle!, opened, e.path, a));
  } finally {
    await handle?.close();
  }
  const manifestAt = a.manifest.bytes;
  await note(a, lines, { path: e.path, type: 'file', size, sha256: hash.digest('hex') });
  yield segmentEnd(a, rootIndex, e.path, unchanged ? key : null, lines, manifestAt);
}

/**
 * Exactly `size` bytes and the block padding, whatever happens to the file meanwhile: the header already
 * promised that size, so a file that shrank or failed to read is padded with zeros (and warned about),
 * and one that grew is cut at the size it had when opened. Returns whether all of it could be read.
 * `hash` takes the content as archived (zeros included): what a restore of this archive writes.
 */
async function* fileContent(handle: FileHandle | null, size: number, p: string, a: Archiver, hash: Hash): AsyncGenerator<Buffer, boolean> {
  let done = 0;
  while (handle && done < size) {
    if (a.signal.aborted) throw abortReason(a.signal);
    const want = Math.min(READ_BYTES, size - done);
    const buffer = a.readBuffer;
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
    const piece = buffer.subarray(0, bytesRead);
    hash.update(piece);
    yield piece;
  }
  for (let left = size - done; left > 0; left -= READ_BYTES) {
    const zeros = Buffer.alloc(Math.min(left, READ_BYTES));
    hash.update(zeros);
    yield zeros;
  }
  const padding = paddingOf(size);
  if (padding > 0) yield Buffer.alloc(padding);
  return done === size;
}

async function unchangedWhileRead(handle: FileHandle, before: Stats, p: string, a: Archiver): Promise<boolean> {
  const after = await handle.stat();
  if (after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
    a.warn(`${shown(p)} changed while being read; the archived copy may mix old and new content`);
    return false;
  }
  return true;
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
  // Cut to the millisecond: Stats#mtime rounds, which puts an mtime in a second's last half millisecond in the next second.
  const mtimeMs = Math.floor(info.mtimeMs);
  const mode = info.mode & 0o7777;
  const uname = a.owners.users.get(info.uid);
  const gname = a.owners.groups.get(info.gid);
  const fractional = mtimeMs % 1000 !== 0;
  // The common entries, in node-tar's bytes without node-tar's cost (ustar.ts): ustar and a pax header for the
  // sub-second mtime most file systems keep (which makes its own buffer), or plain ustar. The rest as before.
  const plain: UstarFields = { path: name, type, mode, uid: info.uid, gid: info.gid, size, mtimeMs, linkpath, uname, gname };
  const withPax = fractional ? encodeWithPaxMtime(plain) : null;
  if (withPax) return withPax;
  // A zeroed block from the buffer pool: node-tar's own, a 512-byte allocation per entry, is memory V8 counts
  // toward its next full collection, and a walk makes tens of thousands.
  const block = Buffer.allocUnsafe(BLOCK).fill(0);
  if (!fractional && encodeUstar(block, plain)) return block;
  const data: HeaderData = { path: name, type, mode, uid: info.uid, gid: info.gid, size, mtime: new Date(mtimeMs), linkpath, uname, gname };
  const header = new Header(data);
  const needsPax = header.encode(block) || fractional;
  if (!needsPax) return block;
  // A pax reader splits records at newlines (node-tar's does), so a name with one would let a file's name
  // forge records (a size, a uid) for the restore. Such names go only in the ustar fields, when they fit.
  const newlineIn = (s: string | undefined) => s !== undefined && s.includes('\n');
  if ((newlineIn(name) || newlineIn(linkpath)) && !fitsUstar(name, linkpath)) {
    a.warn(`skipped ${shown('/' + name)}: a name with a newline must be short and ASCII to be archived safely`);
    return null;
  }
  const pax = new Pax({ ...data, path: newlineIn(name) ? undefined : name, linkpath: newlineIn(linkpath) ? undefined : linkpath });
  return Buffer.concat([pax.encode(), block]);
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

async function* reportProgress(source: AsyncIterable<StreamPiece>, ctx: JobContext): AsyncGenerator<StreamPiece> {
  const report = throttled((bytes) => ctx.progress('archiving', bytes));
  let bytes = 0;
  for await (const piece of source) {
    if (Buffer.isBuffer(piece)) bytes += piece.length;
    else if (piece.type === 'reused') for (const c of piece.chunks) bytes += usedBytes(c);
    report(bytes);
    yield piece;
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

/** Runs one synchronous filesystem call on p; a failure the backup survives becomes a warning and undefined. */
function orWarn<T>(p: string, a: Archiver, op: () => T, consequence = ''): T | undefined {
  try {
    return op();
  } catch (err) {
    return survivable(err, p, a, consequence);
  }
}

/** orWarn for an asynchronous call. */
async function orWarnAsync<T>(p: string, a: Archiver, op: () => Promise<T>, consequence = ''): Promise<T | undefined> {
  try {
    return await op();
  } catch (err) {
    return survivable(err, p, a, consequence);
  }
}

function survivable(err: unknown, p: string, a: Archiver, consequence: string): undefined {
  if (!isFsError(err)) throw err;
  const reason = err.code === 'ENOENT' ? 'it was deleted during the backup (ENOENT)' : fsReason(err);
  a.warn(`cannot read ${shown(p)}: ${reason}${consequence}`);
  return undefined;
}

function utf8OrNull(bytes: Buffer): string | null {
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : null;
}

/**
 * When the manifest entry keeps its unchanged lines as slices of the chunks that stored the previous archive's
 * manifest, instead of being stored whole: its lines hold every file's SHA-256, so when a few files in each
 * directory change, every chunk of a manifest stored whole is new (3.3 MiB stored of the 1 GiB benchmark's day of
 * change). Kept when it keeps at least half of the manifest in stretches of at least `minStretch` bytes, at least
 * `minBytesPerPiece` kept bytes per chunk list entry (each costs the catalog and the snapshot's manifest object),
 * and no longer than KEEP_SLICES_MS (the files cache then finds the old manifest unusable): then it is written whole.
 */
const KEEP_MANIFEST = { minStretch: 1024, minKeptShare: 0.5, minBytesPerPiece: 2048, maxStretches: 100_000 } as const;

/** A stretch of the manifest's lines: `length` bytes, at `from` in the previous archive's manifest or new (null). */
interface ManifestStretch {
  from: number | null;
  length: number;
}

/**
 * The per-file manifest, spooled to a 0600 file in a private 0700 temp dir as the walk goes (never held in
 * memory: a million entries would be a hundred MB), then archived as the last entry. Its SHA-256 and line count
 * go into the metadata. Where each line was in the previous archive's manifest is followed in stretches, so the
 * unchanged ones can be kept from its chunks (KEEP_MANIFEST).
 */
class ManifestSpool {
  private pending: string[] = [];
  private pendingBytes = 0;
  private written = 0;
  private lines = 0;
  private readonly hash = createHash('sha256');
  private digest: string | null = null;
  /** Null once there are too many to follow (the manifest is then written whole). */
  private stretches: ManifestStretch[] | null = [];

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

  /** The manifest's bytes so far: where the next line goes. */
  get bytes(): number {
    return this.written + this.pendingBytes;
  }

  /** Adds a line; `from`, where the previous archive's manifest has it (null if not known). Returns its length. */
  async add(line: ManifestLine, from: number | null): Promise<number> {
    const text = manifestText(line);
    const length = Buffer.byteLength(text);
    this.follow(from, length);
    this.pending.push(text);
    this.pendingBytes += length;
    this.lines++;
    if (this.pendingBytes >= SPOOL_FLUSH_BYTES) await this.flush();
    return length;
  }

  private follow(from: number | null, length: number): void {
    const stretches = this.stretches;
    if (!stretches) return;
    const last = stretches[stretches.length - 1];
    const continues = last !== undefined && (from === null ? last.from === null : last.from !== null && last.from + last.length === from);
    if (continues) last.length += length;
    else if (stretches.length < KEEP_MANIFEST.maxStretches) stretches.push({ from, length });
    else this.stretches = null;
  }

  /**
   * The manifest as the last entry, then the end of the archive: header, the lines (kept from the previous
   * manifest's chunks where KEEP_MANIFEST says so, otherwise the spool's bytes read back in pieces), padding. The
   * files cache records the entry's chunks, for the next backup to keep lines from.
   */
  async *archiveEntry(signal: AbortSignal, cache: FilesCache | null): AsyncGenerator<StreamPiece> {
    await this.flush();
    await this.close();
    this.digest = this.hash.digest('hex');
    const size = this.written;
    // A fixed time: an unchanged tree must give a byte-identical archive, or its last chunk is new every backup.
    const data: HeaderData = { path: MANIFEST_ENTRY_NAME, type: 'File', mode: 0o600, uid: 0, gid: 0, size, mtime: new Date(0) };
    const header = new Header(data);
    // A manifest over 8 GiB does not fit ustar's size field.
    const headerBytes = header.encode() ? Buffer.concat([new Pax(data).encode(), header.block!]) : header.block!;
    const previous = cache?.previousManifest() ?? null;
    if (cache && previous && this.unchangedFrom(previous, headerBytes.length)) {
      // The same lines as last time: the same entry, to the end of the archive, without reading it back.
      yield { type: 'reused', chunks: previous.chunks };
      cache.recordManifest(Promise.resolve(previous.chunks), { contentAt: previous.contentAt, size }, previous.keptSince ?? undefined);
      return;
    }
    const plan = (previous && this.keptStretches(previous)) ?? [{ length: size, kept: null }];
    const parts = new ChunkListParts();
    yield headerBytes;
    const reader = await open(this.file, 'r');
    try {
      let at = 0;
      let cutBefore = false;
      for (const stretch of plan) {
        if (stretch.kept) {
          if (!cutBefore) yield parts.cut();
          yield parts.kept(stretch.kept);
          cutBefore = true;
        } else {
          yield* this.readBack(reader, at, stretch.length, signal);
          cutBefore = false;
        }
        at += stretch.length;
      }
    } finally {
      await reader.close();
    }
    yield Buffer.concat([Buffer.alloc(paddingOf(size)), END_OF_ARCHIVE]);
    yield parts.cut();
    if (!cache) return;
    const chunks = parts.list();
    if (!chunks) return;
    const kept = plan.some((stretch) => stretch.kept);
    cache.recordManifest(chunks, { contentAt: headerBytes.length, size }, kept ? (previous?.keptSince ?? cache.now()) : undefined);
  }

  /** Whether every line is where the previous manifest had it, and nothing more: the entry is then the same. */
  private unchangedFrom(previous: StoredManifest, headerLength: number): boolean {
    const [only, ...more] = this.stretches ?? [];
    return more.length === 0 && only?.from === 0 && only.length === previous.size && headerLength === previous.contentAt;
  }

  /**
   * The manifest's stretches, those to keep as slices of the previous manifest's chunks; null when it is better
   * written whole (KEEP_MANIFEST). A short kept stretch is written again, joined with the new lines around it.
   */
  private keptStretches(previous: StoredManifest): { length: number; kept: ChunkUse[] | null }[] | null {
    if (!this.stretches) return null;
    const slicer = new ChunkListSlicer(previous.chunks);
    const plan: { length: number; kept: ChunkUse[] | null }[] = [];
    let keptBytes = 0;
    let pieces = 0;
    for (const { from, length } of this.stretches) {
      const kept = from !== null && length >= KEEP_MANIFEST.minStretch && from + length <= previous.size ? slicer.slices(previous.contentAt + from, length) : [];
      if (kept.length > 0) {
        plan.push({ length, kept });
        keptBytes += length;
        pieces += kept.length + 1;
        continue;
      }
      const last = plan[plan.length - 1];
      if (last && !last.kept) last.length += length;
      else plan.push({ length, kept: null });
    }
    if (keptBytes < this.written * KEEP_MANIFEST.minKeptShare || pieces * KEEP_MANIFEST.minBytesPerPiece > keptBytes) return null;
    return plan;
  }

  /** Bytes `at` to `at + length` of the spool, in pieces. */
  private async *readBack(reader: FileHandle, at: number, length: number, signal: AbortSignal): AsyncGenerator<Buffer> {
    let done = 0;
    while (done < length) {
      if (signal.aborted) throw abortReason(signal);
      const want = Math.min(READ_BYTES, length - done);
      const { bytesRead, buffer } = await reader.read(Buffer.allocUnsafe(want), 0, want, at + done);
      if (bytesRead === 0) throw new LifeboatError('source_failed', `the manifest spool ${this.file} shrank while being archived`);
      done += bytesRead;
      yield bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
    }
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

import { closeSync, fsyncSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ChunkUse, Sha256Hex, slicesOf, type Logger } from '@lifeboat/shared';

/**
 * The files cache, as restic and borg keep one: what the previous backup of this plan step made of each
 * segment of the tree (a group of small entries, or one large file), keyed by everything that decides its
 * bytes (the tar headers, and each file's device, inode and ctime). A segment whose key is unchanged is not
 * read again: its chunk ids are reused.
 *
 * A missing, damaged or foreign cache only costs speed, never correctness: it is ignored (and rewritten); a
 * segment is reused only when its key matches exactly and the store still holds every chunk it names (asked of
 * the server first, which then keeps those chunks from garbage collection until the job ends). The new cache is
 * written beside the old one and replaces it only once the artifact is stored.
 *
 * Records are in walk order, so the old cache is read as a cursor alongside the walk: memory holds the ids of
 * the chunks it names (for the server's answer), never the whole cache.
 */

/** Bump when the segmenting or the key changes: an old cache is then simply not used. */
const FORMAT = 'lifeboat files cache v2';

const CacheHeader = z.object({ format: z.literal(FORMAT), identity: z.string() });

/**
 * One line of an archive's per-file manifest (tar-writer.ts), for each entry archived; `path` is the path as
 * backed up (the entry name with its "/"). A hard link is another name of a file archived earlier (`target`, as
 * backed up), restored as a hard link to it.
 */
export const ManifestLine = z.discriminatedUnion('type', [
  z.object({ path: z.string(), type: z.literal('file'), size: z.number().int().min(0), sha256: Sha256Hex }),
  z.object({ path: z.string(), type: z.literal('directory') }),
  z.object({ path: z.string(), type: z.literal('symlink'), target: z.string() }),
  z.object({ path: z.string(), type: z.literal('hardlink'), target: z.string() }),
]);
export type ManifestLine = z.infer<typeof ManifestLine>;

const SegmentRecord = z.object({
  /** The listed root the segment is in (its index), and the path of its first entry: its place in walk order. */
  root: z.number().int().min(0),
  first: z.string(),
  key: Sha256Hex,
  chunks: z.array(ChunkUse).min(1),
  manifest: z.array(ManifestLine),
  /**
   * A group of small entries only: each manifest line's entry as `key:bytes` (entryKey in tar-writer.ts, and its
   * bytes in the segment, header and padding included), comma-separated, in the manifest's order. An empty key is
   * an entry that may not be reused alone. Read only when the group changed, to keep its unchanged entries.
   */
  entries: z.string().optional(),
  /** When this group first kept entries from older chunks (ms since the epoch): see KEEP_SLICES_MS. */
  keptSince: z.number().int().optional(),
  /**
   * Where the segment's first manifest line is in the archive's per-file manifest (its byte offset there): so an
   * unchanged line can be kept from the chunks that stored the manifest (tar-writer.ts ManifestSpool).
   */
  manifestAt: z.number().int().min(0).optional(),
  /**
   * Only in the last record (root MANIFEST_RECORD_ROOT): the manifest entry itself, whose `chunks` hold its
   * header (`contentAt` bytes), its content (`size` bytes), its padding and the end of the archive.
   */
  manifestEntry: z.object({ contentAt: z.number().int().min(0), size: z.number().int().min(0) }).optional(),
});
export type SegmentRecord = z.infer<typeof SegmentRecord>;

/** The manifest entry's record comes after every root's (walk order is by root first). */
const MANIFEST_RECORD_ROOT = 2 ** 31;

/** The previous archive's manifest entry, as the files cache recorded it: what its lines may be kept from. */
export interface StoredManifest {
  chunks: ChunkUse[];
  contentAt: number;
  size: number;
  /** Since when it has kept lines from older chunks, or null if it was written whole. */
  keptSince: number | null;
}

/**
 * How long a group may go on keeping its entries as slices of older chunks before it is read and stored whole
 * again. A chunk a slice uses stays stored whole, with the bytes of the files since deleted or replaced in it:
 * without a bound, an unchanged group would keep those alive forever, past every snapshot that held them, and
 * retention would never remove a deleted file from the store. With it, they go at most this long after the
 * snapshots that hold them expire.
 */
export const KEEP_SLICES_MS = 7 * 24 * 3600 * 1000;

/** An entry of an earlier group that can be kept as it was stored: where its bytes are, and its manifest line. */
export interface StoredEntry {
  key: string;
  line: ManifestLine;
  /** Its bytes in the archive (header, content, padding), and the slices of chunks that hold them. */
  bytes: number;
  chunks: ChunkUse[];
  /** Since when its group has kept entries from older chunks (its record's keptSince), or null if it never did. */
  keptSince: number | null;
  /** Where its manifest line is in the previous archive's manifest, or null if the record did not say. */
  lineAt: number | null;
}

/** A manifest line as the manifest holds it: what its length and its place there are counted in. */
export function manifestText(line: ManifestLine): string {
  return `${JSON.stringify(line)}\n`;
}

/** The entries of a group record, by path, with the slices of the record's chunks that hold their bytes. */
function storedEntries(record: SegmentRecord, into: Map<string, StoredEntry>): void {
  if (!record.entries) return;
  const items = record.entries.split(',');
  if (items.length !== record.manifest.length) return;
  let offset = 0;
  let lineAt = record.manifestAt ?? null;
  for (const [i, item] of items.entries()) {
    const colon = item.indexOf(':');
    const key = item.slice(0, colon);
    const bytes = Number(item.slice(colon + 1));
    if (colon < 0 || !Number.isSafeInteger(bytes) || bytes < 0) return;
    const chunks = key === '' ? [] : slicesOf(record.chunks, offset, bytes);
    const line = record.manifest[i]!;
    if (chunks.length > 0) into.set(line.path, { key, line, bytes, chunks, keptSince: record.keptSince ?? null, lineAt });
    offset += bytes;
    if (lineAt !== null) lineAt += Buffer.byteLength(manifestText(line));
  }
}

export interface FilesCacheOptions {
  /** The cache file of this plan step on this agent. */
  file: string;
  /** What must match for the cache to apply: the paths and excludes, the repository's chunk id scheme. */
  identity: string;
  /** The clock (ms since the epoch) for KEEP_SLICES_MS; Date.now unless a test sets it. */
  now?: () => number;
  /** Asks the server which of these chunk ids the store lacks. */
  absent(ids: string[]): Promise<Set<string>>;
  log: Logger;
}

/** Walk order: by root, then path component by component as the walk sorts them (a directory before its contents). */
export function walkOrder(rootA: number, a: string, rootB: number, b: string): number {
  if (rootA !== rootB) return rootA - rootB;
  if (a === b) return 0;
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  }
  return pa.length - pb.length;
}

/** What a record may say besides its segment's chunks and manifest lines (SegmentRecord). */
export type RecordDetails = Partial<Pick<SegmentRecord, 'entries' | 'keptSince' | 'manifestAt' | 'manifestEntry'>>;

/** The manifest entry's record has no segment key of its own: never looked up, only read at the end. */
const MANIFEST_RECORD_KEY = '0'.repeat(64);

export class FilesCache {
  private readonly temp: string;
  private out: number | null;
  private pending: string[] = [];
  private pendingBytes = 0;
  /** Records are written in walk order, each once its chunk ids are known. */
  private tail: Promise<void> = Promise.resolve();
  private failed = false;
  reusedSegments = 0;

  private constructor(
    private readonly options: FilesCacheOptions,
    private old: RecordCursor | null,
    private readonly absentChunks: Set<string>,
  ) {
    mkdirSync(path.dirname(options.file), { recursive: true, mode: 0o700 });
    this.temp = `${options.file}.new-${process.pid}`;
    this.out = openSync(this.temp, 'w', 0o600);
    this.write(JSON.stringify({ format: FORMAT, identity: options.identity }) + '\n');
  }

  /** Opens the previous cache (if any applies) and asks the server which of its chunks are gone. */
  static async open(options: FilesCacheOptions): Promise<FilesCache> {
    let cursor: RecordCursor | null = null;
    let absent = new Set<string>();
    try {
      const ids = new Set<string>();
      const scan = RecordCursor.open(options.file, options.identity);
      if (scan) {
        try {
          for (let chunkIds = scan.nextChunkIds(); chunkIds; chunkIds = scan.nextChunkIds()) for (const id of chunkIds) ids.add(id);
        } finally {
          scan.close();
        }
        absent = await options.absent([...ids]);
        cursor = RecordCursor.open(options.file, options.identity);
        options.log.info(`files cache: ${ids.size} chunk(s) remembered${absent.size ? `, ${absent.size} no longer in the store` : ''}`);
      }
    } catch (err) {
      options.log.warn(`files cache ${options.file} is not usable, every file is read: ${(err as Error).message}`);
      cursor?.close();
      cursor = null;
    }
    return new FilesCache(options, cursor, absent);
  }

  /** The previous backup's record of the segment starting at `first`, if its key is unchanged and its chunks are all still stored. */
  lookup(root: number, first: string, key: string): SegmentRecord | null {
    const record = this.readOld((old) => old.seek(root, first, key), null);
    if (!record || !this.usable(record)) return null;
    this.reusedSegments++;
    return record;
  }

  /** The time for a group that starts keeping entries from older chunks now. */
  now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** A record may be reused (or kept from) when the store still holds its chunks, and it kept slices not too long (KEEP_SLICES_MS). */
  private usable(record: SegmentRecord): boolean {
    if (record.chunks.some((c) => this.absentChunks.has(c.id))) return false;
    return record.keptSince === undefined || this.now() - record.keptSince <= KEEP_SLICES_MS;
  }

  /** Reads the old cache; a damaged one is dropped (with a warning) and the rest of the files are read. */
  private readOld<T>(read: (old: RecordCursor) => T, otherwise: T): T {
    if (!this.old) return otherwise;
    try {
      return read(this.old);
    } catch (err) {
      this.options.log.warn(`files cache ${this.options.file} is damaged, the rest of the files are read: ${(err as Error).message}`);
      this.old.close();
      this.old = null;
      return otherwise;
    }
  }

  /**
   * The entries of the previous backup's records around the group from `first` to `last` (a group that changed),
   * by path, whose chunks are all still stored: what of the group may be kept without reading it again.
   */
  entriesAround(root: number, first: string, last: string): Map<string, StoredEntry> {
    const found = new Map<string, StoredEntry>();
    for (const record of this.readOld((old) => old.covering(root, first, last), [])) {
      if (this.usable(record)) storedEntries(record, found);
    }
    return found;
  }

  /** Remembers a segment for the next backup; `chunks` settles once its bytes were cut and hashed. */
  record(root: number, first: string, key: string, chunks: Promise<ChunkUse[]>, manifest: ManifestLine[], more: RecordDetails = {}): void {
    this.tail = this.tail.then(async () => {
      if (this.failed) return;
      try {
        const refs = await chunks;
        if (refs.length > 0) this.write(JSON.stringify({ root, first, key, chunks: refs, manifest, ...more }) + '\n');
      } catch {
        this.failed = true;
      }
    });
  }

  /** The previous archive's manifest entry, if the cache recorded it and the store still holds its chunks. */
  previousManifest(): StoredManifest | null {
    const record = this.readOld((old) => old.covering(MANIFEST_RECORD_ROOT, '', '').at(-1) ?? null, null);
    // covering() gives only records of that root: the last one, when the previous backup recorded its manifest.
    if (!record?.manifestEntry || !this.usable(record)) return null;
    return { chunks: record.chunks, ...record.manifestEntry, keptSince: record.keptSince ?? null };
  }

  /** Remembers this archive's manifest entry (the last record). */
  recordManifest(chunks: Promise<ChunkUse[]>, entry: { contentAt: number; size: number }, keptSince: number | undefined): void {
    this.record(MANIFEST_RECORD_ROOT, '', MANIFEST_RECORD_KEY, chunks, [], { manifestEntry: entry, keptSince });
  }

  /** The artifact is stored: the new cache replaces the old one. */
  async commit(): Promise<void> {
    await this.tail;
    if (this.failed) return this.discard();
    try {
      this.flush();
      fsyncSync(this.out!);
      closeSync(this.out!);
      this.out = null;
      renameSync(this.temp, this.options.file);
    } catch (err) {
      this.options.log.warn(`could not save the files cache ${this.options.file}; the next backup reads every file: ${(err as Error).message}`);
      this.discard();
    } finally {
      this.old?.close();
    }
  }

  /** The backup failed: the old cache stays as it was. */
  discard(): void {
    this.failed = true;
    this.old?.close();
    if (this.out !== null) closeSync(this.out);
    this.out = null;
    rmSync(this.temp, { force: true });
  }

  /** Forgets the cache entirely: the next backup reads every file. */
  static forget(file: string): void {
    rmSync(file, { force: true });
  }

  private write(line: string): void {
    this.pending.push(line);
    this.pendingBytes += line.length;
    if (this.pendingBytes >= 256 * 1024) this.flush();
  }

  private flush(): void {
    if (this.out === null || this.pending.length === 0) return;
    const bytes = Buffer.from(this.pending.join(''), 'utf8');
    this.pending = [];
    this.pendingBytes = 0;
    for (let at = 0; at < bytes.length; ) at += writeSync(this.out, bytes, at, bytes.length - at);
  }
}

/** Reads a cache file's records in order, one line at a time. */
class RecordCursor {
  private buffer = Buffer.alloc(0);
  private eof = false;
  /** Records read and not yet passed (a look ahead of one or two). */
  private readonly ahead: SegmentRecord[] = [];
  /** The last record passed: it holds the entries after its first up to the next record's first. */
  private previous: SegmentRecord | null = null;

  private constructor(private fd: number | null) {}

  /** Null when there is no cache, or it is for another identity or format. Throws on a damaged one. */
  static open(file: string, identity: string): RecordCursor | null {
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch {
      return null;
    }
    const cursor = new RecordCursor(fd);
    const first = cursor.line();
    const header = first === null ? null : CacheHeader.safeParse(safeJson(first));
    if (!header?.success || header.data.identity !== identity) {
      cursor.close();
      return null;
    }
    return cursor;
  }

  next(): SegmentRecord | null {
    const text = this.line();
    if (text === null) return null;
    const parsed = SegmentRecord.safeParse(safeJson(text));
    if (!parsed.success) throw new Error('a damaged record');
    return parsed.data;
  }

  /**
   * Only the chunk ids of the next record (for the question to the server): a light read, no validation — the
   * records themselves are validated when the walk reaches them.
   */
  nextChunkIds(): string[] | null {
    const text = this.line();
    if (text === null) return null;
    const chunks = (safeJson(text) as { chunks?: unknown } | null)?.chunks;
    if (!Array.isArray(chunks)) throw new Error('a damaged record');
    return chunks.map((c: { id?: unknown }) => (typeof c?.id === 'string' && /^[0-9a-f]{64}$/.test(c.id) ? c.id : '')).filter(Boolean);
  }

  /**
   * The record starting exactly at (root, first) with this key, passing those before it in walk order; null if
   * there is none. A record there with another key is passed only when another one starts there too (a group of
   * nothing but a large file's header, then the file's own record): the file's lookup, next, still finds its own.
   */
  seek(root: number, first: string, key: string): SegmentRecord | null {
    for (;;) {
      const record = this.peek(0);
      if (!record) return null;
      const order = walkOrder(record.root, record.first, root, first);
      if (order > 0) return null;
      if (order === 0 && record.key === key) return this.pass();
      if (order === 0) {
        const after = this.peek(1);
        if (!after || walkOrder(after.root, after.first, root, first) !== 0) return null;
      }
      this.pass();
    }
  }

  /** The records that may hold entries from (root, first) to (root, last) in walk order: the one before, and those starting within. */
  covering(root: number, first: string, last: string): SegmentRecord[] {
    for (let r = this.peek(0); r && walkOrder(r.root, r.first, root, first) <= 0; r = this.peek(0)) this.pass();
    const records = this.previous && this.previous.root === root ? [this.previous] : [];
    for (let r = this.peek(0); r && walkOrder(r.root, r.first, root, last) <= 0; r = this.peek(0)) records.push(this.pass());
    return records;
  }

  private peek(at: number): SegmentRecord | null {
    while (this.ahead.length <= at) {
      const record = this.next();
      if (!record) return null;
      this.ahead.push(record);
    }
    return this.ahead[at]!;
  }

  private pass(): SegmentRecord {
    this.previous = this.ahead.shift()!;
    return this.previous;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private line(): string | null {
    for (;;) {
      const newline = this.buffer.indexOf(10);
      if (newline >= 0) {
        const text = this.buffer.subarray(0, newline).toString('utf8');
        this.buffer = this.buffer.subarray(newline + 1);
        return text;
      }
      if (this.eof || this.fd === null) return null;
      const more = Buffer.allocUnsafe(256 * 1024);
      const n = readSync(this.fd, more, 0, more.length, null);
      if (n === 0) this.eof = true;
      else this.buffer = Buffer.concat([this.buffer, more.subarray(0, n)]);
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

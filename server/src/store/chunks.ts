import {
  Cipher,
  decodeChunk,
  describeError,
  encodePackIndex,
  LifeboatError,
  MAX_STORED_CHUNK_BYTES,
  newPackId,
  PACK_INDEX_FORMAT,
  PACK_TARGET_BYTES,
  packIndexKey,
  packKey,
  readChunkHeader,
  type PackEntry,
  type PackIndex,
  type StoreBackend,
} from '@lifeboat/shared';
import type { Catalog } from '../catalog/catalog.js';

type ChunkIndex = Pick<Catalog, 'chunkLocation' | 'recordPack'>;

/** Packs sealing at once per writer before it stops taking chunks: bounds the server's memory on a slow disk. */
const MAX_SEALING = 1;
/**
 * A pack is gathered in one buffer of this size, which takes any stored chunk when empty; a chunk that would
 * overflow it starts the next pack. Copied in, a chunk's own buffer (the received frame) dies young; held until
 * its pack was written, it lived through collections, and V8 counts such buffers toward its next full collection
 * until one runs: one every 15 MB or so of upload (bench/RESULTS.md).
 */
const PACK_BUFFER_BYTES = Math.max(PACK_TARGET_BYTES, MAX_STORED_CHUNK_BYTES) + 1024 * 1024;

/**
 * Content-addressed chunks on top of a backend, kept in packs (shared/src/store/pack.ts) and located through
 * the catalog's chunk index. The store is untrusted (DESIGN §11): every chunk is checked on the way in and on
 * the way out — fully (decompressed and hashed against its id) when it is not encrypted; when it is, the
 * server holds no key, so it checks the header and length, and the restoring agent checks the tag and the id.
 */
export class ChunkStore {
  /** Packs being written by this process: not yet indexed, and not orphans either. */
  private readonly writing = new Set<string>();

  constructor(
    private readonly backend: StoreBackend,
    private readonly index: ChunkIndex,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Whether the store durably holds a chunk (a catalog lookup: no round trip to the store). */
  has(id: string): boolean {
    return this.index.chunkLocation(id) !== undefined;
  }

  /** The stored bytes of a chunk, verified; 'not_found' when the store does not hold it. */
  async get(id: string, plainSize: number | null): Promise<Buffer> {
    let at = this.index.chunkLocation(id);
    if (!at) throw new LifeboatError('not_found', `the store has no chunk ${id.slice(0, 16)}…`);
    let stored: Buffer;
    try {
      stored = await this.backend.getRange(packKey(at.pack), at.offset, at.length);
    } catch (err) {
      // Garbage collection may have moved the chunk to a new pack and deleted the old one since the lookup.
      const moved = this.index.chunkLocation(id);
      if (!(err instanceof LifeboatError && err.code === 'not_found') || !moved || moved.pack === at.pack) throw err;
      at = moved;
      stored = await this.backend.getRange(packKey(at.pack), at.offset, at.length);
    }
    verifyStoredChunk(stored, id, plainSize, 'the stored chunk is damaged');
    return stored;
  }

  /** A writer for one upload's chunks (or one repack); nothing it takes is durable before `flush` resolves. */
  writer(options: { move?: boolean } = {}): PackWriter {
    return new PackWriter(this.backend, this.index, this.clock, options.move ?? false, this.writing);
  }

  isWriting(packId: string): boolean {
    return this.writing.has(packId);
  }
}

/**
 * Gathers chunks into a pack and seals it when it reaches PACK_TARGET_BYTES: pack object (temp file, fsync,
 * rename), then its index object, then the catalog rows — so a chunk is in the index only once it is durable.
 */
export class PackWriter {
  /** The pack being gathered (its first `bytes`), and the buffer of the last one written, for the next. */
  private buffer: Buffer | null = null;
  private spare: Buffer | null = null;
  private entries: PackEntry[] = [];
  private bytes = 0;
  /** Chunks taken and not yet in the catalog: an upload need not be sent them twice. */
  private readonly pending = new Set<string>();
  private readonly sealing = new Set<Promise<void>>();
  private failure: unknown = null;

  constructor(
    private readonly backend: StoreBackend,
    private readonly index: ChunkIndex,
    private readonly clock: () => number,
    private readonly move: boolean,
    private readonly writing: Set<string>,
  ) {}

  /** Verifies a chunk and adds it to the pack being filled; false when this writer already holds it. */
  add(id: string, stored: Buffer, plainSize: number): boolean {
    verifyStoredChunk(stored, id, plainSize, 'nothing stored');
    if (this.failure) throw this.failure;
    if (this.pending.has(id)) return false;
    if (stored.length > PACK_BUFFER_BYTES) throw new LifeboatError('integrity', `chunk ${id.slice(0, 16)}… is ${stored.length} bytes stored, more than a chunk can be; nothing stored`);
    this.pending.add(id);
    if (this.bytes + stored.length > PACK_BUFFER_BYTES) this.seal();
    this.buffer ??= this.spare ?? Buffer.allocUnsafeSlow(PACK_BUFFER_BYTES);
    this.spare = null;
    this.entries.push([id, this.bytes, stored.length, plainSize]);
    this.bytes += stored.copy(this.buffer, this.bytes);
    if (this.bytes >= PACK_TARGET_BYTES) this.seal();
    return true;
  }

  holds(id: string): boolean {
    return this.pending.has(id);
  }

  /** Resolves when the writer may take more chunks (few enough packs are being written); rejects once one failed. */
  async ready(): Promise<void> {
    while (this.sealing.size >= MAX_SEALING) await Promise.race(this.sealing);
    if (this.failure) throw this.failure;
  }

  /** Seals what is gathered and waits for every pack of this writer to be durable and indexed. */
  async flush(): Promise<void> {
    this.seal();
    while (this.sealing.size > 0) await Promise.race(this.sealing);
    if (this.failure) throw this.failure;
  }

  /** Drops what is gathered and not yet sealing (the upload failed; nothing of it may be recorded). */
  discard(): void {
    this.buffer = null;
    this.spare = null;
    this.entries = [];
    this.bytes = 0;
  }

  private seal(): void {
    if (this.entries.length === 0) return;
    const packId = newPackId();
    const entries = this.entries;
    const size = this.bytes;
    const buffer = this.buffer!;
    this.buffer = null;
    this.entries = [];
    this.bytes = 0;
    this.writing.add(packId);
    const done = (async () => {
      try {
        await this.backend.put(packKey(packId), buffer.subarray(0, size));
        // Written: the buffer may take the next pack (MAX_SEALING packs are written at a time, so one spare does).
        this.spare = buffer;
        const index: PackIndex = { format: PACK_INDEX_FORMAT, pack: packId, size, chunks: entries };
        await this.backend.put(packIndexKey(packId), await encodePackIndex(index));
        this.index.recordPack(index, this.clock(), this.move);
      } catch (err) {
        this.failure ??= err instanceof LifeboatError ? err : new LifeboatError('store_failed', `writing a pack failed: ${describeError(err).message}`);
      } finally {
        this.writing.delete(packId);
        for (const [id] of entries) this.pending.delete(id);
      }
    })();
    this.sealing.add(done);
    void done.finally(() => this.sealing.delete(done));
  }
}

export function verifyStoredChunk(stored: Buffer, id: string, plainSize: number | null, consequence: string): void {
  try {
    const header = readChunkHeader(stored);
    if (plainSize !== null && header.plainLength !== plainSize) {
      throw new LifeboatError('integrity', `chunk ${id.slice(0, 16)}… holds ${header.plainLength} bytes where ${plainSize} were announced`);
    }
    if (header.cipher === Cipher.None) decodeChunk(stored, id, plainSize);
  } catch (err) {
    if (err instanceof LifeboatError) throw new LifeboatError('integrity', `${err.message}; ${consequence}`);
    throw err;
  }
}

import { Readable } from 'node:stream';
import { chunkListDigest, LifeboatError, usedPart, type ChunkKeys, type ChunkReader, type ChunkRef, type ChunkUse } from '@lifeboat/shared';
import { acquireCodec, type ChunkCodec } from '../codec-pool.js';

/** What reading an artifact from the store needs to know about it. */
export interface StoredArtifact {
  name: string;
  kind: string;
  step: number;
  size: number;
  sha256: string;
  chunks: readonly ChunkUse[];
}

export interface ReadArtifactOptions {
  /** Chunks fetched ahead of the consumer (default 4): what is in memory is at most this many chunks, decoded. */
  readAhead?: number;
  signal?: AbortSignal;
  /** Bytes emitted so far, after each chunk. */
  onProgress?: (bytes: number) => void;
}

/**
 * An artifact's bytes read straight from the store, for restores without a server and for restore drills: its
 * chunks in order, a few fetched ahead, each decoded and verified (authentication tag, recorded length, id) in
 * the codec threads, and the chunk list checked against its recorded digest first and the total size before the
 * stream ends. The store is untrusted (DESIGN §11): any failure destroys the stream with a
 * LifeboatError('integrity' or 'not_found') naming the chunk. Memory stays bounded by the read-ahead whatever the
 * artifact's size; the consumer's pace sets the reading pace.
 */
export function readArtifact(reader: ChunkReader, artifact: StoredArtifact, keys: ChunkKeys | null, options: ReadArtifactOptions = {}): Readable {
  const readAhead = Math.max(1, options.readAhead ?? 4);
  const where = `artifact ${artifact.name} (${artifact.kind}, step ${artifact.step})`;

  const fetchChunk = async (codec: ChunkCodec, ref: ChunkRef): Promise<Buffer> => {
    let stored: Buffer;
    try {
      stored = await reader.readChunk(ref.id);
    } catch (err) {
      if (err instanceof LifeboatError && err.code === 'not_found') throw new LifeboatError('not_found', `${where}: chunk ${ref.id.slice(0, 16)}… is missing from the store`);
      throw err instanceof LifeboatError ? new LifeboatError(err.code, `${where}: ${err.message}`) : err;
    }
    try {
      return await codec.decode(stored, ref.id, ref.size, keys);
    } catch (err) {
      throw err instanceof LifeboatError ? new LifeboatError(err.code, `${where}: ${err.message}`) : err;
    }
  };

  async function* chunksInOrder(): AsyncGenerator<Buffer> {
    if (chunkListDigest(artifact.chunks) !== artifact.sha256) {
      throw new LifeboatError('integrity', `${where}: its chunk list does not match the digest recorded at backup`);
    }
    const ahead: { id: string; chunk: Promise<Buffer> }[] = [];
    let requested = 0;
    let emitted = 0;
    // Acquired here, not before: a stream never read never starts the threads (and `finally` releases them).
    const codec = acquireCodec();
    try {
      for (let index = 0; index < artifact.chunks.length; index++) {
        while (requested < artifact.chunks.length && requested - index < readAhead) {
          const ref = artifact.chunks[requested++]!;
          // A chunk the list uses again within the read-ahead (slices of one chunk) is read once.
          const pending = ahead.find((a) => a.id === ref.id)?.chunk ?? fetchChunk(codec, ref);
          // Awaited in order below; until then a rejection must not count as unhandled (the stream may end first).
          pending.catch(() => undefined);
          ahead.push({ id: ref.id, chunk: pending });
        }
        const data = usedPart(await ahead.shift()!.chunk, artifact.chunks[index]!);
        emitted += data.length;
        options.onProgress?.(emitted);
        yield data;
      }
    } finally {
      codec.release();
    }
    if (emitted !== artifact.size) {
      throw new LifeboatError('integrity', `${where}: the stream read from the store holds ${emitted} bytes where ${artifact.size} were recorded at backup`);
    }
  }

  return Readable.from(chunksInOrder(), { objectMode: false, highWaterMark: 1, ...(options.signal ? { signal: options.signal } : {}) });
}

import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { decodeChunk, encodeChunk, FRAME_HEADER_BYTES, freeNow, LifeboatError, ownMemory, type ChunkKeys, type EncodedChunk, type ErrorCode } from '@lifeboat/shared';
import type { CodecResult, CodecTask, WorkerKeys } from './codec-worker.js';

/**
 * A small pool of worker threads for chunk work: encoding (id, zstd, AES-GCM) while the main thread reads and
 * cuts a backup's stream, decoding (authentication, inflation, id check) while it writes a restore's files.
 */
export class ChunkCodecPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (r: CodecResult) => void; reject: (e: Error) => void }>();
  private seq = 0;
  private next = 0;

  private constructor(size: number) {
    const url = new URL('./codec-worker.js', import.meta.url);
    for (let i = 0; i < size; i++) {
      // A small young generation makes the worker collect its dead chunk buffers soon after each one.
      const worker = new Worker(url, { resourceLimits: { maxYoungGenerationSizeMb: 4 } });
      worker.unref();
      worker.on('message', (result: CodecResult) => this.settle(result));
      worker.on('error', (err) => this.failAll(err));
      this.workers.push(worker);
    }
  }

  /** A pool, or null where workers cannot start (the sources run unbuilt, as in unit tests): chunks are coded inline then. */
  static create(size = Number(process.env.LIFEBOAT_CODEC_WORKERS ?? Math.max(1, Math.min(2, availableParallelism() - 1)))): ChunkCodecPool | null {
    if (!(size > 0)) return null;
    if (!existsSync(fileURLToPath(new URL('./codec-worker.js', import.meta.url)))) return null;
    return new ChunkCodecPool(size);
  }

  /** `plain` moves to the worker when it owns its memory (the chunker's chunks do): it is unusable after. */
  async encode(plain: Buffer, level: number, keys: ChunkKeys | null): Promise<EncodedChunk> {
    const { view, transfer } = movable(plain);
    const result = await this.run({ kind: 'encode', seq: this.seq++, plain: view, level, headroom: FRAME_HEADER_BYTES, keys: workerKeys(keys) }, transfer);
    return { id: result.id!, size: result.size!, stored: asBuffer(result.bytes!) };
  }

  /** `stored` moves to the worker when it fills its memory (see movable; it is unusable after), and is copied otherwise. */
  async decode(stored: Buffer, id: string, size: number | null, keys: ChunkKeys | null): Promise<Buffer> {
    const { view, transfer } = movable(stored);
    const result = await this.run({ kind: 'decode', seq: this.seq++, stored: view, id, size, keys: workerKeys(keys) }, transfer);
    return asBuffer(result.bytes!);
  }

  /**
   * Bytes this thread is done with, freed at once where node can (freeNow), or else moved to a worker to be freed
   * there when they own their memory (see movable): left here, they would wait for a full collection of this
   * thread's larger heap. Unusable after.
   */
  discard(bytes: Buffer): void {
    if (freeNow(bytes, FRAME_HEADER_BYTES)) return;
    const memory = ownMemory(bytes, FRAME_HEADER_BYTES);
    if (!memory) return;
    const task: CodecTask = { kind: 'discard', seq: this.seq++, memory };
    this.workers[this.next++ % this.workers.length]!.postMessage(task, [memory]);
  }

  private run(task: CodecTask, transfer: ArrayBuffer[]): Promise<CodecResult> {
    const worker = this.workers[this.next++ % this.workers.length]!;
    return new Promise((resolve, reject) => {
      this.pending.set(task.seq, { resolve, reject });
      worker.postMessage(task, transfer);
    });
  }

  private settle(result: CodecResult): void {
    const waiter = this.pending.get(result.seq);
    if (!waiter) return;
    this.pending.delete(result.seq);
    if (!result.error) return waiter.resolve(result);
    // An integrity failure found in the worker stays one: the restore reports it as such.
    const { code, message } = result.error;
    waiter.reject(code ? new LifeboatError(code as ErrorCode, message) : new LifeboatError('internal', `chunk coding failed: ${message}`));
  }

  private failAll(err: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(new LifeboatError('internal', `the chunk codec thread stopped: ${err.message}`));
    this.pending.clear();
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/**
 * The bytes to post and what moves with them. A buffer that fills its memory from the start, or all but a
 * header of at most FRAME_HEADER_BYTES, to its end moves without a copy: the chunker's chunks, and a chunk
 * received as a frame of its own (the socket layer made that memory for the one message; the frame header in
 * front moves along, unused). Anything else is copied: a smaller frame may share its memory with the socket's
 * next bytes, and Node's small buffers (under 4 KiB) share a pool, neither of which may move from under its other users.
 */
function movable(bytes: Buffer): { view: Uint8Array; transfer: ArrayBuffer[] } {
  const memory = ownMemory(bytes, FRAME_HEADER_BYTES);
  if (memory) {
    return { view: new Uint8Array(memory, bytes.byteOffset, bytes.byteLength), transfer: [memory] };
  }
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return { view: copy, transfer: [copy.buffer] };
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function workerKeys(keys: ChunkKeys | null): WorkerKeys | null {
  return keys ? { encryption: keys.encryption, id: keys.id } : null;
}

/** What uploads and downloads code chunks with: the pool's threads when there are some, inline otherwise. */
export interface ChunkCodec {
  /** Encodes a chunk; the stored form leaves room for a frame header in front. */
  encode(plain: Buffer, level: number, keys: ChunkKeys | null): Promise<EncodedChunk>;
  /** Decodes and checks a stored chunk (see decodeChunk). */
  decode(stored: Buffer, id: string, size: number | null, keys: ChunkKeys | null): Promise<Buffer>;
  /** Bytes this thread is done with (the pool frees them on a worker thread); unusable after. */
  discard(bytes: Buffer): void;
  release(): void;
}

function codecOf(pool: ChunkCodecPool | null): Omit<ChunkCodec, 'release'> {
  if (pool) return { encode: (plain, level, keys) => pool.encode(plain, level, keys), decode: (stored, id, size, keys) => pool.decode(stored, id, size, keys), discard: (bytes) => pool.discard(bytes) };
  return {
    encode: async (plain, level, keys) => encodeChunk(plain, { level, keys, headroom: FRAME_HEADER_BYTES }),
    decode: async (stored, id, size, keys) => decodeChunk(stored, id, size, keys),
    discard: (bytes) => void freeNow(bytes, FRAME_HEADER_BYTES),
  };
}

let shared: ChunkCodecPool | null | undefined;
let users = 0;
let closeTimer: NodeJS.Timeout | null = null;
/** How long the pool outlives its last user: the artifacts of one backup follow each other closely. */
const IDLE_CLOSE_MS = 1000;

/**
 * The agent's one pool, started on first use and stopped a moment after its last user released it: idle worker
 * threads would hold their memory (a V8 isolate each) through quiet hours.
 */
export function acquireCodec(): ChunkCodec {
  if (closeTimer) clearTimeout(closeTimer);
  closeTimer = null;
  if (shared === undefined) shared = ChunkCodecPool.create();
  const pool = shared;
  users++;
  let released = false;
  return {
    ...codecOf(pool),
    release: () => {
      if (released) return;
      released = true;
      if (--users > 0) return;
      closeTimer = setTimeout(() => {
        closeTimer = null;
        if (users > 0 || shared !== pool) return;
        shared = undefined;
        void pool?.close();
      }, IDLE_CLOSE_MS);
      closeTimer.unref();
    },
  };
}

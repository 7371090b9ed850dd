import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { encodeChunk, FRAME_HEADER_BYTES, LifeboatError, type ChunkKeys, type EncodedChunk } from '@lifeboat/shared';
import type { EncodeResult, EncodeTask } from './encode-worker.js';

/**
 * A small pool of worker threads that encode chunks (hash, zstd, AES-GCM): the main thread reads and cuts the
 * stream while the workers use the other cores. Results come back in submission order.
 */
export class EncoderPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (c: EncodedChunk) => void; reject: (e: Error) => void }>();
  private seq = 0;
  private next = 0;

  private constructor(size: number) {
    const url = new URL('./encode-worker.js', import.meta.url);
    for (let i = 0; i < size; i++) {
      // A small young generation makes the worker collect its dead chunk buffers soon after each one.
      const worker = new Worker(url, { resourceLimits: { maxYoungGenerationSizeMb: 4 } });
      worker.unref();
      worker.on('message', (result: EncodeResult) => this.settle(result));
      worker.on('error', (err) => this.failAll(err));
      this.workers.push(worker);
    }
  }

  /** A pool, or null where workers cannot start (the sources run unbuilt, as in unit tests): encode inline then. */
  static create(size = Number(process.env.LIFEBOAT_ENCODE_WORKERS ?? Math.max(1, Math.min(2, availableParallelism() - 1)))): EncoderPool | null {
    if (!(size > 0)) return null;
    if (!existsSync(fileURLToPath(new URL('./encode-worker.js', import.meta.url)))) return null;
    return new EncoderPool(size);
  }

  encode(plain: Buffer, level: number, keys: ChunkKeys | null): Promise<EncodedChunk> {
    const seq = this.seq++;
    // The chunker hands out buffers of their own, moved to the worker without a copy (`plain` is unusable after).
    // Anything else (a view into a larger buffer) is copied first.
    const ownsBuffer = plain.byteOffset === 0 && plain.byteLength === plain.buffer.byteLength && !(plain.buffer instanceof SharedArrayBuffer);
    const copy = ownsBuffer ? new Uint8Array(plain.buffer, 0, plain.byteLength) : Uint8Array.from(plain);
    const task: EncodeTask = { seq, plain: copy, level, headroom: FRAME_HEADER_BYTES, keys: keys ? { encryption: keys.encryption, id: keys.id } : null };
    const worker = this.workers[this.next++ % this.workers.length]!;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      worker.postMessage(task, [copy.buffer as ArrayBuffer]);
    });
  }

  private settle(result: EncodeResult): void {
    const waiter = this.pending.get(result.seq);
    if (!waiter) return;
    this.pending.delete(result.seq);
    if (result.error) waiter.reject(new LifeboatError('internal', `encoding a chunk failed: ${result.error}`));
    else waiter.resolve({ id: result.id!, size: result.size!, stored: Buffer.from(result.stored!.buffer, result.stored!.byteOffset, result.stored!.byteLength) });
  }

  private failAll(err: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(new LifeboatError('internal', `the chunk encoder stopped: ${err.message}`));
    this.pending.clear();
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** Encodes with the pool when there is one, inline otherwise; stored chunks leave room for a frame header in front. */
export function encoder(pool: EncoderPool | null): (plain: Buffer, level: number, keys: ChunkKeys | null) => Promise<EncodedChunk> {
  return pool ? (plain, level, keys) => pool.encode(plain, level, keys) : async (plain, level, keys) => encodeChunk(plain, { level, keys });
}

let shared: EncoderPool | null | undefined;
let users = 0;
let closeTimer: NodeJS.Timeout | null = null;
/** How long the pool outlives its last user: the artifacts of one backup follow each other closely. */
const IDLE_CLOSE_MS = 1000;

/**
 * The agent's one pool, started on first use and stopped a moment after its last user released it: idle worker
 * threads would hold their memory (a V8 isolate each) through restores and quiet hours.
 */
export function acquireEncoder(): { encode: (plain: Buffer, level: number, keys: ChunkKeys | null) => Promise<EncodedChunk>; release: () => void } {
  if (closeTimer) clearTimeout(closeTimer);
  closeTimer = null;
  if (shared === undefined) shared = EncoderPool.create();
  const pool = shared;
  users++;
  let released = false;
  return {
    encode: encoder(pool),
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

import { parentPort } from 'node:worker_threads';
// Subpath imports: a worker loads only what it uses (the package index would pull in every schema).
import { decodeChunk, encodeChunk } from '@lifeboat/shared/chunk-codec';
import { LifeboatError } from '@lifeboat/shared/errors';
import { freeNow, GarbageMeter } from '@lifeboat/shared/memory';

/**
 * Chunk work off the main thread, so backups and restores use every core: encoding (id, zstd, AES-GCM) for a
 * backup, decoding (authentication, inflation, id check) for a restore.
 */
export type CodecTask = EncodeTask | DecodeTask | DiscardTask;

export interface EncodeTask {
  kind: 'encode';
  seq: number;
  plain: Uint8Array;
  level: number;
  headroom: number;
  keys: WorkerKeys | null;
}

export interface DecodeTask {
  kind: 'decode';
  seq: number;
  stored: Uint8Array;
  id: string;
  size: number | null;
  keys: WorkerKeys | null;
}

/** Memory the main thread is done with: freed here, where collections are cheap. No reply. */
export interface DiscardTask {
  kind: 'discard';
  seq: number;
  memory: ArrayBuffer;
}

export interface WorkerKeys {
  encryption: Uint8Array;
  id: Uint8Array;
}

export interface CodecResult {
  seq: number;
  /** Encode: the chunk's id and plain size. */
  id?: string;
  size?: number;
  /** Encode: the stored form (after the headroom); decode: the plain bytes. */
  bytes?: Uint8Array;
  /** A failure, with the LifeboatError code when it was one (an integrity failure stays one). */
  error?: { code: string | null; message: string };
}

// Everything a worker allocates is garbage right after the chunk goes back: collect often, it is cheap here.
const garbage = new GarbageMeter(4 * 1024 * 1024, 64 * 1024 * 1024);

parentPort?.on('message', (task: CodecTask) => {
  if (task.kind === 'discard') {
    garbage.add(task.memory.byteLength);
    return;
  }
  try {
    const keys = task.keys ? { encryption: Buffer.from(task.keys.encryption), id: Buffer.from(task.keys.id) } : null;
    if (task.kind === 'encode') {
      const chunk = encodeChunk(asBuffer(task.plain), { level: task.level, keys, headroom: task.headroom });
      // The plain chunk was moved here for this and is copied into the stored one: done with.
      done(task.plain, chunk.stored);
      // The stored chunk sits in a buffer of its own (after the headroom): moved back without a copy.
      reply({ seq: task.seq, id: chunk.id, size: chunk.size, bytes: chunk.stored });
    } else {
      const plain = decodeChunk(asBuffer(task.stored), task.id, task.size, keys);
      done(task.stored, plain);
      reply({ seq: task.seq, bytes: plain });
    }
  } catch (err) {
    const code = err instanceof LifeboatError ? err.code : null;
    parentPort!.postMessage({ seq: task.seq, error: { code, message: (err as Error).message } } satisfies CodecResult);
  }
});

/**
 * A task's input, once its result no longer needs it (a decoded chunk may be a view of the stored one): freed
 * now, or counted for a collection. Its memory is this thread's alone, whatever bytes lie in front of it: it was
 * moved here whole, or is a copy made for the move (codec-pool.ts movable).
 */
function done(input: Uint8Array, result: Uint8Array): void {
  if (input.buffer === result.buffer) return;
  if (!freeNow(input, input.byteOffset)) garbage.add(input.byteLength * 2);
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Sends the result, moving its bytes' memory when they are nearly all of it (a stored chunk after its frame
 * headroom, a decompressed chunk). A small view into Node's shared buffer pool is copied: the pool cannot move.
 */
function reply(result: CodecResult): void {
  const bytes = result.bytes!;
  const movable = !(bytes.buffer instanceof SharedArrayBuffer) && bytes.buffer.byteLength - bytes.byteLength <= 1024;
  parentPort!.postMessage(result, movable ? [bytes.buffer as ArrayBuffer] : []);
}

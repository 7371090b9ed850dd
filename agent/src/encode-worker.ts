import { parentPort } from 'node:worker_threads';
// Subpath imports: a worker loads only what it uses (the package index would pull in every schema).
import { encodeChunk } from '@lifeboat/shared/chunk-codec';
import { GarbageMeter } from '@lifeboat/shared/memory';

/** Hashing, compressing and encrypting chunks off the main thread, so a backup uses every core. */
export interface EncodeTask {
  seq: number;
  plain: Uint8Array;
  level: number;
  headroom: number;
  keys: { encryption: Uint8Array; id: Uint8Array } | null;
}

export interface EncodeResult {
  seq: number;
  id?: string;
  size?: number;
  stored?: Uint8Array;
  error?: string;
}

// Everything a worker allocates is garbage right after the chunk goes back: collect often, it is cheap here.
const garbage = new GarbageMeter(4 * 1024 * 1024, 64 * 1024 * 1024);

parentPort?.on('message', (task: EncodeTask) => {
  garbage.add(task.plain.byteLength * 2);
  try {
    const keys = task.keys ? { encryption: Buffer.from(task.keys.encryption), id: Buffer.from(task.keys.id) } : null;
    const chunk = encodeChunk(Buffer.from(task.plain.buffer, task.plain.byteOffset, task.plain.byteLength), { level: task.level, keys, headroom: task.headroom });
    // The stored chunk sits in a buffer of its own (after the headroom): moved back without a copy.
    const result: EncodeResult = { seq: task.seq, id: chunk.id, size: chunk.size, stored: chunk.stored };
    parentPort!.postMessage(result, [chunk.stored.buffer as ArrayBuffer]);
  } catch (err) {
    parentPort!.postMessage({ seq: task.seq, error: (err as Error).message } satisfies EncodeResult);
  }
});

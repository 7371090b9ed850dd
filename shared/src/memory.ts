import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Chunks flow through as large Buffers that die young, but V8 frees their memory only when it collects, and it
 * collects late when the JS heap itself is small: a backup's RSS would climb with garbage. A minor collection
 * every few MiB processed releases it cheaply (about a millisecond), and a major one now and then releases the
 * buffers that lived long enough to be promoted, keeping RSS flat whatever the data size.
 */
type Gc = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

/**
 * What `expression` gives in a context made after V8's `flag` is set: flags such as --expose-gc and harmony
 * features take effect in contexts made after them, not in this one. Undefined where that fails.
 */
function fromContextWithFlag(flag: string, expression: string): unknown {
  try {
    setFlagsFromString(flag);
    return runInNewContext(expression);
  } catch {
    return undefined;
  }
}

let gc: Gc | null | undefined;

function collector(): Gc | null {
  gc ??= (fromContextWithFlag('--expose-gc', 'gc') as Gc | undefined) ?? null;
  return gc;
}

type Transfer = (this: ArrayBuffer, length?: number) => ArrayBuffer;

let transfer: Transfer | null | undefined;

/**
 * ArrayBuffer.prototype.transfer (ES2024), looked up on first use (a process that never frees, such as the admin
 * CLI, pays nothing for it): node 22 has it. Node 20 has it behind V8's --harmony-rab-gsab-transfer, in every
 * context made after the flag is set, and the function from such a context works on this context's buffers too.
 * Not on the command line: V8 drops the flags of features it has shipped, and node refuses to start with a V8 flag
 * its V8 does not know. Where neither works, memory is freed by collections, as before.
 */
function transferFunction(): Transfer | null {
  if (transfer === undefined) {
    const found = (ArrayBuffer.prototype as { transfer?: Transfer }).transfer ?? fromContextWithFlag('--harmony-rab-gsab-transfer', 'ArrayBuffer.prototype.transfer');
    transfer = typeof found === 'function' ? (found as Transfer) : null;
  }
  return transfer;
}

/** Whether freeNow can free memory in this process. */
export function canFreeNow(): boolean {
  return transferFunction() !== null;
}

/**
 * The memory a buffer fills: from its start, or after at most `headroom` bytes (a frame header in front), to its
 * end. Null for shared memory and for Node's small buffers (under 4 KiB), which share a pool with others: such
 * memory must neither move to another thread nor be freed from under its other users.
 */
export function ownMemory(bytes: Uint8Array, headroom = 0): ArrayBuffer | null {
  const memory = bytes.buffer;
  if (memory instanceof SharedArrayBuffer || memory.byteLength < 4096) return null;
  return bytes.byteOffset <= headroom && bytes.byteOffset + bytes.byteLength === memory.byteLength ? memory : null;
}

/**
 * Frees a buffer's memory at once (see ownMemory) instead of at a later collection: chunk-sized buffers then go
 * back to the allocator while the next chunk is made, so the next one reuses them (no fresh pages to fault in,
 * no garbage to prompt collections). Every view of that memory reads as empty afterwards: only for buffers
 * nothing uses any more, with no I/O pending on them. Returns false where it did not free them (the memory then
 * waits for a collection, as any other).
 */
export function freeNow(bytes: Uint8Array, headroom = 0): boolean {
  const free = transferFunction();
  if (!free) return false;
  const memory = ownMemory(bytes, headroom);
  if (!memory) return false;
  free.call(memory, 0);
  return true;
}

const MINOR_EVERY_BYTES = 16 * 1024 * 1024;
/**
 * Resident memory past which every collection is a full one (the processes aim to stay under ~150 MiB). Not
 * lower: a server at work sits at 115–125 MiB and an agent at 130–140, and at 112 MiB every collection of theirs
 * was a full one, about 10% of a backup's CPU for no lower peak (bench/RESULTS.md).
 */
const SOFT_RSS_LIMIT = 128 * 1024 * 1024;
/** Buffers that waited for an acknowledgement across collections end up in the old generation: sweep it too. */
const MAJOR_EVERY_BYTES = 48 * 1024 * 1024;

/** Counts bytes of buffers that became garbage and collects every few MiB of them. */
export class GarbageMeter {
  private minor = 0;
  private major = 0;

  constructor(
    private readonly minorEvery = MINOR_EVERY_BYTES,
    private readonly majorEvery = MAJOR_EVERY_BYTES,
  ) {}

  add(bytes: number): void {
    this.minor += bytes;
    this.major += bytes;
    // Past the soft limit, sweep everything now rather than on schedule: the budget is about resident memory.
    if (this.minor >= this.minorEvery && process.memoryUsage.rss() > SOFT_RSS_LIMIT) this.major = this.majorEvery;
    if (this.major >= this.majorEvery) {
      this.major = 0;
      this.minor = 0;
      collector()?.({ type: 'major' });
    } else if (this.minor >= this.minorEvery) {
      this.minor = 0;
      collector()?.({ type: 'minor' });
    }
  }
}

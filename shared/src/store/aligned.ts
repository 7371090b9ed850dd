/**
 * Page-aligned buffers, for direct I/O (O_DIRECT): the kernel moves such a write or read between the device and
 * the process's memory without copying it through the page cache, but only when the memory, the length and the
 * file offset are all aligned to the device's logical block size. 4096 covers the usual 512 and 4096.
 *
 * Why the store bothers: a pack is written once and read again only by a restore or a drill, so caching it gains
 * nothing, and copying it into the page cache is most of the server's system time. On the VMs measured
 * (bench/RESULTS.md), 512 MiB of 8 MiB writes took 1.5 s of system time buffered (page cache pages handed out
 * fresh by the hypervisor are slow to touch) and 0.1 s direct.
 */
export const DIRECT_IO_ALIGNMENT = 4096;

/** Only the part of WebAssembly this module uses: the project compiles without the DOM's type library. */
declare const WebAssembly: { Memory: new (descriptor: { initial: number; maximum: number }) => { buffer: ArrayBuffer } };
const WASM_PAGE_BYTES = 64 * 1024;

/** The memory allocateAligned made: a buffer over any other cannot be known to be aligned. */
const alignedMemory = new WeakSet<ArrayBufferLike>();

/**
 * A zero-filled buffer of `bytes` whose first byte is on a page boundary. Node has no aligned allocation, but a
 * WebAssembly memory is mapped whole by the engine's page allocator, so it always starts on a page. Its size is
 * rounded up to 64 KiB: `alignedRoom` tells how much of that follows a view's start.
 */
export function allocateAligned(bytes: number): Buffer {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE_BYTES));
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer;
  alignedMemory.add(memory);
  return Buffer.from(memory, 0, bytes);
}

/**
 * How many bytes of allocateAligned's memory start at this buffer's first byte (which a direct write may pad
 * into); 0 when the buffer is not such memory, or does not start on an aligned byte of it.
 */
export function alignedRoom(buffer: Uint8Array): number {
  if (!alignedMemory.has(buffer.buffer) || buffer.byteOffset % DIRECT_IO_ALIGNMENT !== 0) return 0;
  return buffer.buffer.byteLength - buffer.byteOffset;
}

/** `bytes` rounded up to a whole number of aligned blocks. */
export function alignedLength(bytes: number): number {
  return Math.ceil(bytes / DIRECT_IO_ALIGNMENT) * DIRECT_IO_ALIGNMENT;
}

/**
 * A few aligned buffers of one size, lent out for direct reads and given back: allocated once and reused, so
 * their pages stay touched (fresh pages are what direct I/O saves). `lend` returns null when all are out.
 */
export class AlignedScratch {
  private readonly free: Buffer[] = [];
  private count = 0;

  constructor(
    private readonly maxBuffers: number,
    readonly bytes: number,
  ) {}

  lend(): Buffer | null {
    const reused = this.free.pop();
    if (reused) return reused;
    if (this.count >= this.maxBuffers) return null;
    this.count++;
    return allocateAligned(this.bytes);
  }

  giveBack(buffer: Buffer): void {
    this.free.push(buffer);
  }
}

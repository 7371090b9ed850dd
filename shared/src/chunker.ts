/**
 * Content-defined chunking (FastCDC with normalized chunking): cut points depend on the content, so an insertion
 * early in a stream moves only the chunks around it and a dump that changed 2% stores about 2% new bytes.
 * The parameters are the store's: changing them changes every chunk id, so they live here, once.
 */
export const CHUNK_MIN = 512 * 1024;
export const CHUNK_AVG = 1024 * 1024;
export const CHUNK_MAX = 8 * 1024 * 1024;

/** A gear table from a fixed seed: the same on every agent, forever (chunk boundaries must be reproducible). */
const GEAR = (() => {
  const table = new Uint32Array(256);
  let state = 0x9e3779b9;
  for (let i = 0; i < 256; i++) {
    // xorshift32: deterministic, well spread; the values only need to look random.
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    table[i] = state;
  }
  return table;
})();

/** Masks with more one-bits before the average size (harder to cut) and fewer after (easier): normalized chunking. */
const bits = Math.log2(CHUNK_AVG);
const MASK_SMALL = spreadMask(bits + 2);
const MASK_LARGE = spreadMask(bits - 2);

/** A mask with `count` one-bits spread over the upper 32 bits (FastCDC's padded masks). */
function spreadMask(count: number): number {
  let mask = 0;
  const step = 32 / count;
  for (let i = 0; i < count; i++) mask |= 1 << (31 - Math.floor(i * step));
  return mask >>> 0;
}

/** Where the next chunk ends within `data[start..end)`, or -1 if no cut point before `end` (and end-start < max). */
export function findCutPoint(data: Uint8Array, start: number, end: number): number {
  const length = end - start;
  if (length <= CHUNK_MIN) return -1;
  const normal = start + Math.min(CHUNK_AVG, length);
  const limit = start + Math.min(CHUNK_MAX, length);
  let hash = 0;
  let i = start + CHUNK_MIN;
  for (; i < normal; i++) {
    hash = ((hash << 1) + GEAR[data[i]!]!) >>> 0;
    if ((hash & MASK_SMALL) === 0) return i + 1;
  }
  for (; i < limit; i++) {
    hash = ((hash << 1) + GEAR[data[i]!]!) >>> 0;
    if ((hash & MASK_LARGE) === 0) return i + 1;
  }
  return limit - start === CHUNK_MAX ? limit : -1;
}

/**
 * Feeds a stream through the cutter: `push` returns the chunks completed so far, `finish` the rest.
 * Memory: at most one maximum-size chunk is held (plus the piece being pushed).
 */
export class ContentDefinedChunker {
  private buffer: Buffer = Buffer.alloc(0);

  push(piece: Buffer): Buffer[] {
    this.buffer = this.buffer.length === 0 ? piece : Buffer.concat([this.buffer, piece]);
    const chunks: Buffer[] = [];
    let start = 0;
    for (;;) {
      const cut = findCutPoint(this.buffer, start, this.buffer.length);
      if (cut < 0) break;
      chunks.push(this.buffer.subarray(start, cut));
      start = cut;
    }
    // Keep the tail in a buffer of its own, so the emitted chunks do not pin a large concatenation in memory.
    this.buffer = start === 0 ? this.buffer : Buffer.from(this.buffer.subarray(start));
    return chunks;
  }

  finish(): Buffer[] {
    const chunks: Buffer[] = [];
    let start = 0;
    while (start < this.buffer.length) {
      const cut = findCutPoint(this.buffer, start, this.buffer.length);
      const end = cut < 0 ? this.buffer.length : cut;
      chunks.push(this.buffer.subarray(start, end));
      start = end;
    }
    this.buffer = Buffer.alloc(0);
    return chunks;
  }
}

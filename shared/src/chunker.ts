/**
 * Content-defined chunking (FastCDC's gear hash, one mask): cut points depend on the content, so an insertion
 * early in a stream moves only the chunks around it and a dump that changed 2% stores about 2% new bytes.
 * The parameters are the store's: changing them changes every chunk id, so they live here, once.
 */
export const CHUNK_MIN = 512 * 1024;
export const CHUNK_AVG = 1024 * 1024;
export const CHUNK_MAX = 8 * 1024 * 1024;

/**
 * How the files source cuts a tree into segments before chunking (agent/src/archive/tar-writer.ts): a file of
 * `largeFile` bytes or more is a segment of its own (chunked as above); smaller entries are grouped, a group
 * ending after `groupMin` bytes at a point chosen by its entries' names, about every `groupAverage` bytes, and at
 * `groupMax` at the latest. No chunk spans two segments. Changing these changes the chunk ids of files artifacts.
 * Smaller groups (16 KiB) re-store less of an edited small file but cost every backup per-chunk work: on the
 * 1 GiB benchmark they saved 12% of the day-of-change bytes and made the unchanged re-backup twice as slow.
 */
export const FILE_SEGMENT = {
  largeFile: 256 * 1024,
  groupMin: 16 * 1024,
  groupAverage: 64 * 1024,
  groupMax: 1024 * 1024,
} as const;

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

/**
 * One mask for every position past the minimum size: a cut point is where the hash of the last 32 bytes matches
 * it, wherever the chunk started. Its one-bits make a cut point about every CHUNK_AVG - CHUNK_MIN bytes, so chunks
 * average CHUNK_AVG. (FastCDC's normalized chunking, a harder mask before the average and an easier one after,
 * makes a cut depend on how far the chunk started: after an edit the two chunkings then rarely meet again, and a
 * 600 KiB rewrite in a media file re-stored every chunk to its end. With one mask they meet within a chunk or two.)
 */
const MASK = spreadMask(Math.round(Math.log2(CHUNK_AVG - CHUNK_MIN)));

/** A mask with `count` one-bits spread over the upper 32 bits (FastCDC's padded masks). */
function spreadMask(count: number): number {
  let mask = 0;
  const step = 32 / count;
  for (let i = 0; i < count; i++) mask |= 1 << (31 - Math.floor(i * step));
  return mask >>> 0;
}

/**
 * Feeds a stream through the cutter: `push` returns the chunks completed so far, `finish` the rest.
 * The rolling hash runs across pieces, so pieces are never concatenated: each byte is copied once into a
 * reused accumulator, and each chunk is one fresh buffer of its exact size (which can be handed to a worker
 * thread without another copy). Memory: one maximum-size accumulator.
 */
export class ContentDefinedChunker {
  private readonly accumulator = Buffer.allocUnsafe(CHUNK_MAX);
  private length = 0;
  private hash = 0;

  push(piece: Uint8Array): Buffer[] {
    const chunks: Buffer[] = [];
    let offset = 0;
    while (offset < piece.length) {
      const { consumed, cut } = this.scan(piece, offset);
      this.accumulator.set(piece.subarray(offset, offset + consumed), this.length);
      this.length += consumed;
      offset += consumed;
      if (cut) chunks.push(this.emit());
    }
    return chunks;
  }

  finish(): Buffer[] {
    return this.length > 0 ? [this.emit()] : [];
  }

  /**
   * Ends the current chunk here, whatever its size (a segment boundary: a file's content starts a chunk of
   * its own, so the chunk ids of an unchanged file can be reused without reading it).
   */
  cut(): Buffer[] {
    return this.finish();
  }

  /** How many bytes of `piece` (from `offset`) belong to the current chunk, and whether the chunk ends there. */
  private scan(piece: Uint8Array, offset: number): { consumed: number; cut: boolean } {
    const available = piece.length - offset;
    // Bytes before the minimum size are never a cut point: copy them without hashing.
    if (this.length < CHUNK_MIN) {
      const skip = Math.min(available, CHUNK_MIN - this.length);
      if (skip === available || this.length + skip < CHUNK_MIN) return { consumed: skip, cut: false };
      const rest = this.scanHashed(piece, offset + skip, this.length + skip);
      return { consumed: skip + rest.consumed, cut: rest.cut };
    }
    return this.scanHashed(piece, offset, this.length);
  }

  /** Hashes from `from` (the chunk being `lengthAtFrom` bytes long there) to a cut point or the piece's end. */
  private scanHashed(piece: Uint8Array, from: number, lengthAtFrom: number): { consumed: number; cut: boolean } {
    let hash = this.hash;
    let i = from;
    const end = Math.min(piece.length, from + (CHUNK_MAX - lengthAtFrom));
    for (; i < end; i++) {
      hash = ((hash << 1) + GEAR[piece[i]!]!) >>> 0;
      if ((hash & MASK) === 0) return this.cutAt(i + 1 - from);
    }
    if (lengthAtFrom + (i - from) === CHUNK_MAX) return this.cutAt(i - from);
    this.hash = hash;
    return { consumed: i - from, cut: false };
  }

  private cutAt(consumed: number): { consumed: number; cut: boolean } {
    this.hash = 0;
    return { consumed, cut: true };
  }

  private emit(): Buffer {
    const chunk = Buffer.allocUnsafe(this.length);
    this.accumulator.copy(chunk, 0, 0, this.length);
    this.length = 0;
    this.hash = 0;
    return chunk;
  }
}

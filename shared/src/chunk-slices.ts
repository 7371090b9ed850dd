import type { ChunkUse } from './protocol.js';

/**
 * Arithmetic on chunk lists that use slices of chunks (protocol.ts ChunkUse): which chunks, and which parts of
 * them, hold a stretch of the stream a list describes. A backup uses it to keep the unchanged files of a group of
 * small files from the chunks that stored them (agent/src/archive/tar-writer.ts).
 */

/** The bytes a chunk list entry adds to its artifact's stream. */
export function usedBytes(c: { size: number; length?: number | undefined }): number {
  return c.length ?? c.size;
}

/** What of a chunk's plaintext (checked against its id and size) the entry adds to the stream: a view, not a copy. */
export function usedPart(plain: Buffer, c: { offset?: number | undefined; length?: number | undefined }): Buffer {
  return c.offset === undefined ? plain : plain.subarray(c.offset, c.offset + c.length!);
}

/** The part of a chunk an entry uses, as offsets into the chunk's plaintext. */
function span(c: ChunkUse): { start: number; end: number } {
  const start = c.offset ?? 0;
  return { start, end: start + usedBytes(c) };
}

/** A slice of `c`'s chunk, or the chunk itself when the slice covers all of it. */
function sliceOf(c: ChunkUse, start: number, end: number): ChunkUse {
  if (start === 0 && end === c.size) return { id: c.id, size: c.size };
  return { id: c.id, size: c.size, offset: start, length: end - start };
}

/**
 * The entries that hold bytes `from` to `from + length` of the stream `chunks` describe, in order; empty when
 * the stream is shorter than that.
 */
export function slicesOf(chunks: readonly ChunkUse[], from: number, length: number): ChunkUse[] {
  return new ChunkListSlicer(chunks).slices(from, length);
}

/**
 * Appends `c` to a list, joined to the last entry when it continues it (the same chunk, the next bytes), so that
 * neighbouring unchanged files kept from one chunk make one slice, and a chunk used whole again is listed whole.
 */
export function appendChunkUse(list: ChunkUse[], c: ChunkUse): void {
  const last = list[list.length - 1];
  if (last && last.id === c.id && span(last).end === span(c).start) {
    list[list.length - 1] = sliceOf(last, span(last).start, span(c).end);
    return;
  }
  list.push(c);
}

/**
 * slicesOf for many stretches of one long list, taken in increasing order: each call resumes where the last one
 * ended instead of counting from the start (a stretch before the last one starts the count again).
 */
export class ChunkListSlicer {
  /** The entry the last stretch started in, and where in the stream that entry starts. */
  private index = 0;
  private at = 0;

  constructor(private readonly chunks: readonly ChunkUse[]) {}

  slices(from: number, length: number): ChunkUse[] {
    if (from < this.at) {
      this.index = 0;
      this.at = 0;
    }
    while (this.index < this.chunks.length && this.at + usedBytes(this.chunks[this.index]!) <= from) {
      this.at += usedBytes(this.chunks[this.index]!);
      this.index++;
    }
    const out: ChunkUse[] = [];
    const to = from + length;
    let at = this.at;
    for (let i = this.index; i < this.chunks.length && at < to; i++) {
      const c = this.chunks[i]!;
      const used = usedBytes(c);
      const { start } = span(c);
      out.push(sliceOf(c, start + Math.max(0, from - at), start + Math.min(used, to - at)));
      at += used;
    }
    return at >= to ? out : [];
  }
}

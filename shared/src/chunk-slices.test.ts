import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { chunkListDigest } from './chunk-codec.js';
import { appendChunkUse, ChunkListSlicer, slicesOf, usedBytes, usedPart } from './chunk-slices.js';
import { ChunkUse } from './protocol.js';

const id = (c: string) => c.repeat(64);

describe('chunk slices', () => {
  it('are checked on receipt: both fields, inside the chunk, never the whole of it', () => {
    expect(ChunkUse.safeParse({ id: id('a'), size: 10 }).success).toBe(true);
    expect(ChunkUse.safeParse({ id: id('a'), size: 10, offset: 2, length: 8 }).success).toBe(true);
    expect(ChunkUse.safeParse({ id: id('a'), size: 10, offset: 2 }).error?.issues[0]?.message).toMatch(/needs both offset and length/);
    expect(ChunkUse.safeParse({ id: id('a'), size: 10, offset: 3, length: 8 }).error?.issues[0]?.message).toMatch(/ends past the chunk's 10 bytes/);
    expect(ChunkUse.safeParse({ id: id('a'), size: 10, offset: 0, length: 10 }).error?.issues[0]?.message).toMatch(/must be listed as the chunk/);
    expect(ChunkUse.safeParse({ id: id('a'), size: 10, offset: 1, length: 0 }).success).toBe(false);
  });

  it('add their length to the stream, and their part of the chunk', () => {
    const plain = Buffer.from('0123456789');
    expect(usedBytes({ size: 10 })).toBe(10);
    expect(usedBytes({ size: 10, length: 4 })).toBe(4);
    expect(usedPart(plain, {}).toString()).toBe('0123456789');
    expect(usedPart(plain, { offset: 3, length: 4 }).toString()).toBe('3456');
  });

  it('find the parts of chunks that hold a stretch of a stream, across chunks and slices', () => {
    // The stream: A[2..6) then B whole then A[6..10): "2345" "bbbbbbbb" "6789".
    const list: ChunkUse[] = [{ id: id('a'), size: 10, offset: 2, length: 4 }, { id: id('b'), size: 8 }, { id: id('a'), size: 10, offset: 6, length: 4 }];
    expect(slicesOf(list, 1, 2)).toEqual([{ id: id('a'), size: 10, offset: 3, length: 2 }]);
    expect(slicesOf(list, 3, 3)).toEqual([{ id: id('a'), size: 10, offset: 5, length: 1 }, { id: id('b'), size: 8, offset: 0, length: 2 }]);
    expect(slicesOf(list, 4, 8)).toEqual([{ id: id('b'), size: 8 }]);
    expect(slicesOf(list, 12, 4)).toEqual([{ id: id('a'), size: 10, offset: 6, length: 4 }]);
    // Past the end of the stream: nothing (the record does not hold that entry).
    expect(slicesOf(list, 14, 4)).toEqual([]);
  });

  it('join neighbouring parts of one chunk, back into the whole chunk when they cover it', () => {
    const list: ChunkUse[] = [];
    appendChunkUse(list, { id: id('a'), size: 10, offset: 0, length: 4 });
    appendChunkUse(list, { id: id('a'), size: 10, offset: 4, length: 3 });
    expect(list).toEqual([{ id: id('a'), size: 10, offset: 0, length: 7 }]);
    appendChunkUse(list, { id: id('a'), size: 10, offset: 7, length: 3 });
    expect(list).toEqual([{ id: id('a'), size: 10 }]);
    // Not contiguous, or the same whole chunk twice: kept apart.
    appendChunkUse(list, { id: id('a'), size: 10 });
    appendChunkUse(list, { id: id('a'), size: 10, offset: 5, length: 2 });
    appendChunkUse(list, { id: id('a'), size: 10, offset: 8, length: 2 });
    expect(list).toHaveLength(4);
  });

  it('leave the digest of a list of whole chunks as it was before slices, and pin a slice\'s place', () => {
    const whole = [{ id: id('a'), size: 10 }, { id: id('b'), size: 8 }];
    const before = createHash('sha256').update(`lifeboat chunk list v1\n${id('a')} 10\n${id('b')} 8\n`).digest('hex');
    expect(chunkListDigest(whole)).toBe(before);
    const sliced = chunkListDigest([{ id: id('a'), size: 10, offset: 2, length: 4 }]);
    expect(sliced).not.toBe(chunkListDigest([{ id: id('a'), size: 10, offset: 3, length: 4 }]));
    expect(sliced).not.toBe(chunkListDigest([{ id: id('a'), size: 10 }]));
  });

  it('are cut from a long list stretch after stretch as slicesOf cuts them, going back when asked', () => {
    // Whole chunks and slices of them, as a list that kept entries has them.
    const list: ChunkUse[] = [];
    for (let i = 0; i < 40; i++) list.push(i % 3 === 1 ? { id: id(String(i % 10)), size: 1000, offset: 100, length: 300 } : { id: id(String(i % 10)), size: 700 + i });
    const total = list.reduce((n, c) => n + usedBytes(c), 0);
    const slicer = new ChunkListSlicer(list);
    let seed = 7;
    const random = (below: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % below;
    for (let from = 0; from < total; from += random(900)) {
      const length = 1 + random(2500);
      expect(slicer.slices(from, length)).toEqual(slicesOf(list, from, length));
    }
    expect(slicer.slices(5, 10)).toEqual(slicesOf(list, 5, 10));
    expect(slicer.slices(total - 1, 2)).toEqual([]);
  });
});

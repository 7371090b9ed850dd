import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CHUNK_MAX, CHUNK_MIN, ContentDefinedChunker } from './chunker.js';

function chunkAll(data: Buffer, pieceSize: number): Buffer[] {
  const chunker = new ContentDefinedChunker();
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += pieceSize) out.push(...chunker.push(data.subarray(i, i + pieceSize)));
  out.push(...chunker.finish());
  return out;
}

const ids = (chunks: Buffer[]) => chunks.map((c) => createHash('sha256').update(c).digest('hex'));

describe('content-defined chunking', () => {
  const data = randomBytes(24 * 1024 * 1024);

  it('cuts the same way whatever the piece sizes, within min and max, losing nothing', () => {
    const a = chunkAll(data, 64 * 1024);
    const b = chunkAll(data, 3 * 1024 * 1024 + 17);
    expect(ids(a)).toEqual(ids(b));
    expect(Buffer.concat(a).equals(data)).toBe(true);
    for (const c of a.slice(0, -1)) {
      expect(c.length).toBeGreaterThanOrEqual(CHUNK_MIN);
      expect(c.length).toBeLessThanOrEqual(CHUNK_MAX);
    }
    // About 1 MiB on average for random data.
    const mean = data.length / a.length;
    expect(mean).toBeGreaterThan(700 * 1024);
    expect(mean).toBeLessThan(1600 * 1024);
  });

  it('re-synchronises after an insertion: most chunks are shared', () => {
    const edited = Buffer.concat([data.subarray(0, 5_000_000), Buffer.from('inserted bytes'), data.subarray(5_000_000)]);
    const before = new Set(ids(chunkAll(data, 1 << 20)));
    const after = ids(chunkAll(edited, 1 << 20));
    const shared = after.filter((id) => before.has(id)).length;
    expect(shared).toBeGreaterThanOrEqual(after.length - 3);
  });

  it('finds the same cut points whatever offset it starts from, after a chunk or two', () => {
    // A cut point must depend only on the bytes around it, not on where the chunk began: otherwise, once an edit
    // moves one cut, the two chunkings of a file keep missing each other's cut points and every chunk to the end
    // of the file is stored again (FastCDC's normalized chunking did: a media file re-stored 18 chunks for one
    // 444 KiB rewrite). Start the same bytes 300 KiB and more in, and count the chunks before the cuts agree.
    const noise = (bytes: number, seed: number) => createCipheriv('aes-256-ctr', Buffer.alloc(32, seed), Buffer.alloc(16)).update(Buffer.alloc(bytes));
    let differing = 0;
    const trials = 16;
    for (let t = 0; t < trials; t++) {
      const stream = noise(12 * 1024 * 1024, t + 1);
      const whole = new Set(ids(chunkAll(stream, 1 << 20)));
      differing += ids(chunkAll(stream.subarray(300 * 1024 + t * 10_000), 1 << 20)).filter((id) => !whole.has(id)).length;
    }
    expect(differing / trials).toBeLessThan(1.8);
  });

  it('cuts a long run of zeros at the maximum size', () => {
    const zeros = chunkAll(Buffer.alloc(20 * 1024 * 1024), 1 << 20);
    expect(zeros[0]!.length).toBe(CHUNK_MAX);
  });
});

describe('content-defined chunking: the cut points of every store', () => {
  it('cuts a fixed stream where it always has: chunk ids of every store depend on it', () => {
    // 32 MiB from AES-256-CTR under a fixed key: the same bytes on every machine.
    const data = createCipheriv('aes-256-ctr', Buffer.alloc(32, 7), Buffer.alloc(16, 0)).update(Buffer.alloc(32 * 1024 * 1024));
    const sizes = chunkAll(data, 100_003).map((c) => c.length);
    expect(sizes.length).toBe(PINNED_SIZES.length);
    expect(sizes).toEqual(PINNED_SIZES);
  });
});

/** The chunk sizes the cutter made of that stream when the store's format was fixed (git f713cd7 and before). */
const PINNED_SIZES = [
  1_790_688, 1_807_621, 1_401_273, 1_055_932, 1_755_041, 550_725, 861_850, 1_076_512,
  1_216_385, 2_225_327, 581_152, 587_419, 959_540, 839_993, 1_539_060, 678_698,
  1_500_961, 894_233, 604_144, 623_810, 1_183_501, 1_033_668, 617_852, 1_733_208,
  1_109_111, 584_102, 588_760, 850_861, 1_049_605, 1_044_524, 1_208_876,
];

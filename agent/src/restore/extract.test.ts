import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BlockAligner } from './extract.js';

describe('BlockAligner', () => {
  it('hands node-tar whole 512-byte blocks, the same bytes in the same order, whatever the input pieces', () => {
    const input = randomBytes(64 * 1024 + 300);
    // Pieces ending anywhere, as content-defined chunks do: some shorter than a block, some spanning many.
    const cuts = [0, 1, 700, 900, 1400, 1500, 9000, 9001, 20_000, 40_000, 40_100, input.length];
    const blocks = new BlockAligner();
    const out: Buffer[] = [];
    for (let i = 1; i < cuts.length; i++) {
      for (const piece of blocks.push(input.subarray(cuts[i - 1], cuts[i]))) {
        expect(piece.length % 512).toBe(0);
        expect(piece.length).toBeGreaterThan(0);
        out.push(piece);
      }
    }
    const rest = blocks.rest();
    expect(rest?.length).toBe(300);
    out.push(rest!);
    expect(Buffer.concat(out).equals(input)).toBe(true);
    expect(blocks.rest()).toBeNull();
  });

  it('passes a block-aligned piece through uncopied', () => {
    const blocks = new BlockAligner();
    const piece = randomBytes(4096);
    const [out] = blocks.push(piece);
    expect(out!.buffer).toBe(piece.buffer);
    expect(blocks.rest()).toBeNull();
  });
});

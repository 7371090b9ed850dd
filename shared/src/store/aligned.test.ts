import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AlignedScratch, allocateAligned, alignedLength, alignedRoom, DIRECT_IO_ALIGNMENT } from './aligned.js';

describe('aligned buffers', () => {
  it('are zeroed, have room for a padded last block, and only an aligned view of them counts as aligned', () => {
    const buffer = allocateAligned(100_001);
    expect(buffer.length).toBe(100_001);
    expect(buffer.every((b) => b === 0)).toBe(true);
    expect(alignedRoom(buffer)).toBeGreaterThanOrEqual(alignedLength(100_001));
    expect(alignedRoom(buffer.subarray(DIRECT_IO_ALIGNMENT))).toBe(alignedRoom(buffer) - DIRECT_IO_ALIGNMENT);
    expect(alignedRoom(buffer.subarray(1))).toBe(0);
    expect(alignedRoom(Buffer.allocUnsafeSlow(1 << 20))).toBe(0);
    expect(alignedLength(1)).toBe(DIRECT_IO_ALIGNMENT);
    expect(alignedLength(DIRECT_IO_ALIGNMENT)).toBe(DIRECT_IO_ALIGNMENT);
  });

  it('start on a page: the kernel takes a direct write from one, and refuses one a byte off', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeboat-aligned-'));
    let fd: number;
    try {
      fd = openSync(join(dir, 'f'), constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT, 0o600);
    } catch {
      rmSync(dir, { recursive: true });
      return; // a file system without direct I/O: nothing to show here
    }
    try {
      const buffer = allocateAligned(3 * DIRECT_IO_ALIGNMENT);
      expect(writeSync(fd, buffer, 0, 2 * DIRECT_IO_ALIGNMENT, 0)).toBe(2 * DIRECT_IO_ALIGNMENT);
      expect(() => writeSync(fd, buffer, 1, 2 * DIRECT_IO_ALIGNMENT, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true });
    }
  });
});

describe('AlignedScratch', () => {
  it('lends aligned buffers of its size, at most its number of them, and reuses those given back', () => {
    const scratch = new AlignedScratch(2, 100_000);
    const a = scratch.lend()!;
    const b = scratch.lend()!;
    expect(a.length).toBe(100_000);
    expect(alignedRoom(a)).toBeGreaterThanOrEqual(100_000);
    expect(scratch.lend()).toBeNull();
    scratch.giveBack(a);
    expect(scratch.lend()).toBe(a);
    scratch.giveBack(b);
    expect(scratch.lend()).toBe(b);
  });
});

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
  it('lends at most its number of buffers, reuses those given back, and swaps a too small free one for a larger', () => {
    const scratch = new AlignedScratch(2);
    const a = scratch.lend(1000)!;
    const b = scratch.lend(1000)!;
    expect(alignedRoom(a)).toBeGreaterThan(0);
    expect(scratch.lend(1000)).toBeNull();
    scratch.giveBack(a);
    expect(scratch.lend(500)).toBe(a);
    scratch.giveBack(a);
    const large = scratch.lend(5 * 1024 * 1024)!;
    expect(large.length).toBeGreaterThanOrEqual(5 * 1024 * 1024);
    expect(large).not.toBe(a);
    expect(scratch.lend(1)).toBeNull();
    scratch.giveBack(b);
    scratch.giveBack(large);
    expect(scratch.lend(5 * 1024 * 1024)).toBe(large);
  });
});

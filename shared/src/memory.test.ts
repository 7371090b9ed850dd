import { describe, expect, it } from 'vitest';
import { canFreeNow, freeNow, ownMemory } from './memory.js';

describe('freeNow', () => {
  it('can free memory in this node (ArrayBuffer.prototype.transfer, natively or behind the V8 flag it sets)', () => {
    expect(canFreeNow()).toBe(true);
  });

  it('frees a buffer that fills its memory, and every view of it reads empty after', () => {
    const chunk = Buffer.allocUnsafeSlow(1024 * 1024).fill(7);
    const view = chunk.subarray(100, 200);
    expect(freeNow(chunk)).toBe(true);
    expect(chunk.buffer.byteLength).toBe(0);
    expect(chunk.length).toBe(0);
    expect(view.length).toBe(0);
  });

  it('frees a buffer behind a header of at most `headroom` bytes, not one with more in front', () => {
    const frame = Buffer.allocUnsafeSlow(64 * 1024);
    expect(freeNow(frame.subarray(60), 50)).toBe(false);
    expect(frame.length).toBe(64 * 1024);
    expect(freeNow(frame.subarray(50), 50)).toBe(true);
    expect(frame.buffer.byteLength).toBe(0);
  });

  it('leaves memory that others may use: a part of a larger buffer, a pooled small buffer, shared memory', () => {
    const large = Buffer.allocUnsafeSlow(64 * 1024);
    expect(freeNow(large.subarray(0, 1024))).toBe(false);
    expect(large.length).toBe(64 * 1024);
    const pooled = Buffer.from('a small buffer shares Node’s pool with others');
    expect(ownMemory(pooled)).toBeNull();
    expect(freeNow(pooled)).toBe(false);
    expect(pooled.toString()).toBe('a small buffer shares Node’s pool with others');
    const shared = Buffer.from(new SharedArrayBuffer(64 * 1024));
    expect(freeNow(shared)).toBe(false);
    expect(shared.length).toBe(64 * 1024);
  });

  it('does nothing to memory already freed or moved away', () => {
    const chunk = Buffer.allocUnsafeSlow(64 * 1024);
    expect(freeNow(chunk)).toBe(true);
    expect(freeNow(chunk)).toBe(false);
  });
});

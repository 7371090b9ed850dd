import { describe, expect, it } from 'vitest';
import { fnv1a32 } from './fnv1a.js';

describe('fnv1a32', () => {
  it('is FNV-1a (32-bit) as published: group boundaries, and so chunk ids, depend on it never changing', () => {
    // The reference test vectors of the FNV specification.
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
  });
});

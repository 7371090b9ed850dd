import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import * as zstd from 'zstd-napi';
import { Compression, decodeChunk, encodeChunk, readChunkHeader, zstdContentSize, type ChunkKeys } from './chunk-codec.js';

const keys: ChunkKeys = { encryption: randomBytes(32), id: randomBytes(32) };
const text = Buffer.from('a log line that repeats\n'.repeat(40_000));
const noise = randomBytes(300_000);

describe('chunk codec', () => {
  it('round-trips compressible and incompressible chunks, compressing only what shrinks', () => {
    const a = encodeChunk(text, { level: 3 });
    expect(readChunkHeader(a.stored).compression).toBe(Compression.Zstd);
    expect(a.stored.length).toBeLessThan(text.length / 20);
    expect(decodeChunk(a.stored, a.id, text.length).equals(text)).toBe(true);
    const b = encodeChunk(noise, { level: 3 });
    expect(readChunkHeader(b.stored).compression).toBe(Compression.None);
    expect(decodeChunk(b.stored, b.id, noise.length).equals(noise)).toBe(true);
  });

  it('encrypts with ids the store cannot fingerprint, and refuses a wrong key or a flipped byte', () => {
    const plainId = encodeChunk(text, { level: 3 }).id;
    const enc = encodeChunk(text, { level: 3, keys });
    expect(enc.id).not.toBe(plainId);
    expect(enc.stored.includes(Buffer.from('a log line'))).toBe(false);
    expect(decodeChunk(enc.stored, enc.id, text.length, keys).equals(text)).toBe(true);
    const other: ChunkKeys = { encryption: randomBytes(32), id: keys.id };
    expect(() => decodeChunk(enc.stored, enc.id, text.length, other)).toThrow(/authentication/);
    const flipped = Buffer.from(enc.stored);
    flipped[flipped.length - 40]! ^= 0xff;
    expect(() => decodeChunk(flipped, enc.id, text.length, keys)).toThrow(/authentication/);
    expect(() => decodeChunk(enc.stored, enc.id, text.length)).toThrow(/passphrase/);
  });

  it('refuses a chunk whose content does not match its id, or whose length differs from the record', () => {
    const a = encodeChunk(noise, { level: 0 });
    const flipped = Buffer.from(a.stored);
    flipped[100]! ^= 1;
    expect(() => decodeChunk(flipped, a.id, noise.length)).toThrow(/does not match its id/);
    expect(() => decodeChunk(a.stored, a.id, noise.length - 1)).toThrow(/recorded/);
  });

  it('refuses a compressed chunk that would inflate past its recorded length', () => {
    const bomb = zstd.compress(Buffer.alloc(8 * 1024 * 1024));
    expect(zstdContentSize(bomb)).toBe(8 * 1024 * 1024);
    const header = Buffer.from(encodeChunk(Buffer.from('x'.repeat(100)), { level: 3 }).stored.subarray(0, 12));
    header[4] = Compression.Zstd;
    header.writeUInt32LE(100, 8);
    expect(() => decodeChunk(Buffer.concat([header, bomb]), 'ab'.repeat(32), 100)).toThrow(/refusing to inflate/);
  });
});

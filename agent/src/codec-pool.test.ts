import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { chunkId, decodeChunk, deriveRepositoryKeys, LifeboatError, newKdfParams } from '@lifeboat/shared';
// The built pool: its worker threads run the built codec-worker.js (the test command builds first).
import { ChunkCodecPool } from '../dist/codec-pool.js';

const pool = ChunkCodecPool.create(1)!;
const keys = deriveRepositoryKeys('pool test passphrase', newKdfParams());

afterAll(async () => {
  await pool.close();
});

describe('ChunkCodecPool', () => {
  it('runs in worker threads (the test would prove nothing on the inline fallback)', () => {
    expect(pool).not.toBeNull();
  });

  it('encodes in a worker what decodes back, with the id the main thread computes', async () => {
    const plain = Buffer.concat([Buffer.alloc(300_000, 'log line '), randomBytes(100_000)]);
    const expected = Buffer.from(plain);
    const encoded = await pool.encode(plain, 3, keys);
    expect(encoded.id).toBe(chunkId(expected, keys));
    expect(encoded.size).toBe(expected.length);
    expect(decodeChunk(encoded.stored, encoded.id, expected.length, keys).equals(expected)).toBe(true);
    const decoded = await pool.decode(encoded.stored, encoded.id, expected.length, keys);
    expect(decoded.equals(expected)).toBe(true);
  });

  it('copies a stored chunk that shares its memory, leaving the rest of that memory in place', async () => {
    const plain = randomBytes(50_000);
    const encoded = await pool.encode(Buffer.from(plain), 3, keys);
    // A frame inside a larger receive buffer, with another message's bytes after it.
    const received = Buffer.concat([Buffer.from('header'), encoded.stored, Buffer.from('next message')]);
    const view = received.subarray(6, 6 + encoded.stored.length);
    const decoded = await pool.decode(view, encoded.id, plain.length, keys);
    expect(decoded.equals(plain)).toBe(true);
    expect(received.buffer.byteLength).toBeGreaterThan(0);
    expect(received.subarray(received.length - 12).toString()).toBe('next message');
  });

  it('moves a received frame that fills its memory instead of copying it', async () => {
    const plain = randomBytes(50_000);
    const encoded = await pool.encode(Buffer.from(plain), 3, keys);
    // A frame of its own, as the socket layer delivers a large message: a header, then the stored chunk.
    const frame = Buffer.concat([Buffer.alloc(50, 1), encoded.stored]);
    const decoded = await pool.decode(frame.subarray(50), encoded.id, plain.length, keys);
    expect(decoded.equals(plain)).toBe(true);
    expect(frame.buffer.byteLength).toBe(0);
  });

  it('reports a damaged chunk as an integrity failure, naming it', async () => {
    const encoded = await pool.encode(randomBytes(20_000), 3, keys);
    const damaged = Buffer.from(encoded.stored);
    damaged[damaged.length - 100] ^= 0xff;
    const failure = await pool.decode(damaged, encoded.id, 20_000, keys).catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(LifeboatError);
    expect((failure as LifeboatError).code).toBe('integrity');
    expect((failure as LifeboatError).message).toMatch(/fails authentication/);
  });
});

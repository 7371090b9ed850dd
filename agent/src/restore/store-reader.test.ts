import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chunkListDigest, ContentDefinedChunker, encodeChunk, FsBackend, packKey, StorePackIndex, writePack, type ChunkKeys, type ChunkReader } from '@lifeboat/shared';
import { collect, rejection } from '../sources/test-context.suite.js';
import { readArtifact, type StoredArtifact } from './store-reader.js';

let dir: string;
let store: FsBackend;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lifeboat-store-reader-'));
  store = new FsBackend(dir);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const keys: ChunkKeys = { encryption: randomBytes(32), id: randomBytes(32) };

/** Incompressible bytes that are the same on every run, so chunk boundaries (and counts) are too. */
function noise(bytes: number, seed: number): Buffer {
  return createCipheriv('aes-256-ctr', Buffer.alloc(32, seed), Buffer.alloc(16)).update(Buffer.alloc(bytes));
}

/**
 * Cuts, encodes and stores content as a backup would (one pack per chunk, so a test can damage or lose one);
 * returns the artifact as its manifest records it.
 */
async function stored(content: Buffer, chunkKeys: ChunkKeys | null = null): Promise<StoredArtifact> {
  const chunker = new ContentDefinedChunker();
  const chunks = [];
  for (const piece of [...chunker.push(content), ...chunker.finish()]) {
    const chunk = encodeChunk(piece, { level: 3, keys: chunkKeys });
    await writePack(store, [{ id: chunk.id, stored: chunk.stored, plainSize: chunk.size }]);
    chunks.push({ id: chunk.id, size: chunk.size });
  }
  return { name: 'site', kind: 'files', step: 0, size: content.length, sha256: chunkListDigest(chunks), chunks };
}

/** The store's chunks as a restore without a server finds them. */
const reader = (): Promise<StorePackIndex> => StorePackIndex.load(store);

describe('readArtifact', () => {
  it('finds only the chunks asked for when the index is loaded for one snapshot', async () => {
    const wanted = await stored(noise(3_000_000, 7));
    const other = await stored(noise(2_000_000, 8));
    const index = await StorePackIndex.load(store, { only: new Set(wanted.chunks.map((c) => c.id)) });
    expect(index.size).toBe(wanted.chunks.length);
    expect(other.chunks.every((c) => index.locate(c.id) === undefined)).toBe(true);
    expect((await collect(readArtifact(index, wanted, null))).equals(noise(3_000_000, 7))).toBe(true);
    expect((await reader()).size).toBe(wanted.chunks.length + other.chunks.length);
  });

  it('reads an artifact back in order, verified, and reports progress', async () => {
    const content = Buffer.concat([noise(3_000_000, 1), Buffer.from('text '.repeat(300_000))]);
    const artifact = await stored(content);
    expect(artifact.chunks.length).toBeGreaterThan(2);
    const progress: number[] = [];
    expect((await collect(readArtifact(await reader(), artifact, null, { onProgress: (n) => progress.push(n) }))).equals(content)).toBe(true);
    expect(progress.at(-1)).toBe(content.length);
  });

  it('decrypts with the repository keys and refuses other keys', async () => {
    const content = randomBytes(2_000_000);
    const artifact = await stored(content, keys);
    expect((await collect(readArtifact(await reader(), artifact, keys))).equals(content)).toBe(true);
    const err = await rejection(collect(readArtifact(await reader(), artifact, { encryption: randomBytes(32), id: keys.id })));
    expect(err.code).toBe('integrity');
    expect(err.message).toMatch(/artifact site \(files, step 0\): chunk .* fails authentication/);
    expect((await rejection(collect(readArtifact(await reader(), artifact, null)))).message).toMatch(/is encrypted; this restore has no passphrase/);
  });

  it('names a chunk the store lacks', async () => {
    const artifact = await stored(noise(3_000_000, 3));
    await store.delete(packKey((await reader()).locate(artifact.chunks[1]!.id)!.pack));
    const err = await rejection(collect(readArtifact(await reader(), artifact, null)));
    expect(err.code).toBe('not_found');
    expect(err.message).toContain(`chunk ${artifact.chunks[1]!.id.slice(0, 16)}… is missing from the store`);
  });

  it('refuses a chunk damaged in the store', async () => {
    const artifact = await stored(randomBytes(1_500_000));
    const key = packKey((await reader()).locate(artifact.chunks[0]!.id)!.pack);
    const damaged = await store.get(key);
    damaged[damaged.length - 10]! ^= 0x01;
    await store.put(key, damaged);
    expect((await rejection(collect(readArtifact(await reader(), artifact, null)))).code).toBe('integrity');
  });

  it('refuses a chunk list that is not the one recorded, and a size that is not', async () => {
    const artifact = await stored(noise(3_000_000, 4));
    expect(artifact.chunks.length).toBeGreaterThan(1);
    const err = await rejection(collect(readArtifact(await reader(), { ...artifact, sha256: 'f'.repeat(64) }, null)));
    expect(err.message).toMatch(/its chunk list does not match the digest recorded at backup/);
    const reordered = { ...artifact, chunks: [...artifact.chunks].reverse() };
    expect((await rejection(collect(readArtifact(await reader(), reordered, null)))).message).toMatch(/its chunk list does not match/);
    const longer = await rejection(collect(readArtifact(await reader(), { ...artifact, size: artifact.size + 1 }, null)));
    expect(longer.message).toMatch(/holds 3000000 bytes where 3000001 were recorded/);
  });

  it('reads an artifact that holds the same chunk twice, and an empty one', async () => {
    const content = randomBytes(700_000);
    const once = await stored(content);
    const twice = Buffer.concat([content, content]);
    const chunks = [...once.chunks, ...once.chunks];
    const artifact = { ...once, size: twice.length, sha256: chunkListDigest(chunks), chunks };
    expect((await collect(readArtifact(await reader(), artifact, null))).equals(twice)).toBe(true);
    const empty = { ...once, size: 0, sha256: chunkListDigest([]), chunks: [] };
    expect((await collect(readArtifact(await reader(), empty, null))).length).toBe(0);
  });

  it('reads slices of chunks, each chunk once for uses within the read-ahead', async () => {
    const content = noise(3_000_000, 3);
    const whole = await stored(content);
    expect(whole.chunks.length).toBeGreaterThan(1);
    const [a, b] = whole.chunks as [StoredArtifact['chunks'][0], StoredArtifact['chunks'][0]];
    const chunks = [
      { id: a.id, size: a.size, offset: 10, length: 100 },
      { id: b.id, size: b.size },
      { id: a.id, size: a.size, offset: 5000, length: a.size - 5000 },
    ];
    const expected = Buffer.concat([content.subarray(10, 110), content.subarray(a.size, a.size + b.size), content.subarray(5000, a.size)]);
    const artifact = { ...whole, size: expected.length, sha256: chunkListDigest(chunks), chunks };
    const index = await reader();
    const fetched: string[] = [];
    const counting: ChunkReader = { readChunk: (id) => (fetched.push(id), index.readChunk(id)) };
    expect((await collect(readArtifact(counting, artifact, null))).equals(expected)).toBe(true);
    expect(fetched).toEqual([a.id, b.id]);
  });

  it('reads only a few chunks ahead of a slow consumer', async () => {
    const artifact = await stored(noise(8_000_000, 2));
    expect(artifact.chunks.length).toBeGreaterThan(5);
    let fetched = 0;
    let inFlight = 0;
    let maxInFlight = 0;
    const chunks = await reader();
    const counting: ChunkReader = {
      async readChunk(id) {
        fetched++;
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        try {
          return await chunks.readChunk(id);
        } finally {
          inFlight--;
        }
      },
    };
    const stream = readArtifact(counting, artifact, null, { readAhead: 2 });
    let consumed = 0;
    let maxAhead = 0;
    for await (const piece of stream as AsyncIterable<Buffer>) {
      void piece;
      consumed++;
      await new Promise((r) => setTimeout(r, 20));
      maxAhead = Math.max(maxAhead, fetched - consumed);
    }
    expect(consumed).toBe(artifact.chunks.length);
    expect(maxInFlight).toBeLessThanOrEqual(2);
    expect(maxAhead).toBeLessThanOrEqual(2);
  });

  it('stops reading when the consumer gives up', async () => {
    const artifact = await stored(noise(8_000_000, 2));
    let fetched = 0;
    const chunks = await reader();
    const stream = readArtifact({ readChunk: (id) => (fetched++, chunks.readChunk(id)) }, artifact, null, { readAhead: 2 });
    for await (const piece of stream as AsyncIterable<Buffer>) {
      void piece;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(stream.destroyed).toBe(true);
    expect(fetched).toBeLessThanOrEqual(4);
  });
});

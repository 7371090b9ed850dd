import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeChunk, FsBackend, MAX_CHUNK_BYTES, PACK_TARGET_BYTES, packIndexKey, packKey, readPackIndex, StorePackIndex } from '@lifeboat/shared';
import { Catalog } from '../catalog/catalog.js';
import { openCatalogDb } from '../catalog/db.js';
import { ChunkStore } from './chunks.js';

async function withStore(test: (chunks: ChunkStore, backend: FsBackend, catalog: Catalog) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-chunks-'));
  const catalog = new Catalog(openCatalogDb(join(dir, 'catalog.db')));
  try {
    const backend = new FsBackend(join(dir, 'store'));
    await test(new ChunkStore(backend, catalog), backend, catalog);
  } finally {
    catalog.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function files(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])).filter((e) => e.isFile()).map((e) => e.name);
}

describe('ChunkStore', () => {
  const plain = Buffer.from('some content '.repeat(1000));

  it('packs verified chunks, indexes them only once durable, and returns them verified', () =>
    withStore(async (chunks, backend) => {
      const c = encodeChunk(plain, { level: 3 });
      const d = encodeChunk(randomBytes(3000), { level: 3 });
      const writer = chunks.writer();
      expect(writer.add(c.id, c.stored, c.size)).toBe(true);
      expect(writer.add(d.id, d.stored, d.size)).toBe(true);
      expect(writer.add(c.id, c.stored, c.size)).toBe(false);
      expect(writer.holds(c.id)).toBe(true);
      // Taken, not durable: neither indexed nor on disk.
      expect(chunks.has(c.id)).toBe(false);
      expect(await files(backend.root)).toEqual([]);
      await writer.flush();
      expect(chunks.has(c.id) && chunks.has(d.id)).toBe(true);
      expect((await chunks.get(c.id, c.size)).equals(c.stored)).toBe(true);
      expect((await chunks.get(d.id, d.size)).equals(d.stored)).toBe(true);
      // One pack and its index object, which alone locate the chunks (restores without a server).
      const index = await StorePackIndex.load(backend);
      expect(index.size).toBe(2);
      expect((await index.readChunk(d.id)).equals(d.stored)).toBe(true);
      expect((await files(backend.root)).length).toBe(2);
    }));

  it('seals a pack once it holds PACK_TARGET_BYTES', () =>
    withStore(async (chunks, backend) => {
      const writer = chunks.writer();
      const big = Array.from({ length: 5 }, () => encodeChunk(randomBytes(PACK_TARGET_BYTES / 4), { level: 0 }));
      for (const c of big) {
        writer.add(c.id, c.stored, c.size);
        await writer.ready();
      }
      await writer.flush();
      const packs: string[] = [];
      for await (const key of backend.list('index/')) packs.push(key);
      expect(packs.length).toBe(2);
      const sizes = await Promise.all(packs.map(async (k) => readPackIndex(await backend.get(k), k).chunks.length));
      expect(sizes.sort()).toEqual([1, 4]);
    }));

  it('starts the next pack when a chunk would overflow the one being gathered, and takes a largest chunk whole', () =>
    withStore(async (chunks, backend) => {
      const writer = chunks.writer();
      const sizes = [7.5 * 1024 * 1024, 2 * 1024 * 1024, MAX_CHUNK_BYTES, 1000];
      const parts = sizes.map((n) => encodeChunk(randomBytes(n), { level: 0 }));
      for (const c of parts) {
        writer.add(c.id, c.stored, c.size);
        await writer.ready();
      }
      await writer.flush();
      const packs: number[][] = [];
      for await (const key of backend.list('index/')) packs.push(readPackIndex(await backend.get(key), key).chunks.map((e) => e[3]));
      // 7.5 MiB alone (2 more would pass the buffer); 2 MiB alone (8 more would too); 8 MiB, a full pack by itself.
      expect(packs.sort((a, b) => a[0]! - b[0]!)).toEqual([[1000], [2 * 1024 * 1024], [7.5 * 1024 * 1024], [MAX_CHUNK_BYTES]]);
      for (const c of parts) expect((await chunks.get(c.id, c.size)).equals(c.stored)).toBe(true);
    }));

  it('refuses a chunk whose bytes do not match its id, storing nothing', () =>
    withStore(async (chunks) => {
      const c = encodeChunk(plain, { level: 3 });
      const other = encodeChunk(Buffer.from('other'), { level: 3 });
      const writer = chunks.writer();
      expect(() => writer.add(c.id, other.stored, other.size)).toThrow(expect.objectContaining({ code: 'integrity' }));
      await writer.flush();
      expect(chunks.has(c.id)).toBe(false);
    }));

  it('refuses a chunk whose size differs from what was announced', () =>
    withStore(async (chunks) => {
      const c = encodeChunk(plain, { level: 3 });
      expect(() => chunks.writer().add(c.id, c.stored, c.size + 1)).toThrow(expect.objectContaining({ code: 'integrity' }));
    }));

  it('reports a stored chunk damaged on disk instead of returning it', () =>
    withStore(async (chunks, backend, catalog) => {
      const c = encodeChunk(randomBytes(5000), { level: 0 });
      const writer = chunks.writer();
      writer.add(c.id, c.stored, c.size);
      await writer.flush();
      const at = catalog.chunkLocation(c.id)!;
      const pack = await backend.get(packKey(at.pack));
      pack[at.offset + 200]! ^= 0xff;
      await backend.put(packKey(at.pack), pack);
      await expect(chunks.get(c.id, c.size)).rejects.toMatchObject({ code: 'integrity' });
      await backend.put(packKey(at.pack), pack.subarray(0, at.offset + 10));
      await expect(chunks.get(c.id, c.size)).rejects.toMatchObject({ code: 'integrity' });
      await backend.delete(packKey(at.pack));
      await expect(chunks.get(c.id, c.size)).rejects.toMatchObject({ code: 'not_found' });
      expect(await backend.has(packIndexKey(at.pack))).toBe(true);
    }));

  it('reads a chunk that garbage collection moved to another pack between the lookup and the read', () =>
    withStore(async (chunks, backend, catalog) => {
      const c = encodeChunk(randomBytes(5000), { level: 0 });
      const first = chunks.writer();
      first.add(c.id, c.stored, c.size);
      await first.flush();
      const old = catalog.chunkLocation(c.id)!;
      const rewrite = chunks.writer({ move: true });
      rewrite.add(c.id, c.stored, c.size);
      await rewrite.flush();
      expect(catalog.chunkLocation(c.id)!.pack).not.toBe(old.pack);
      await backend.delete(packKey(old.pack));
      let lookups = 0;
      const stale = new ChunkStore(backend, { chunkLocation: (id) => (lookups++ === 0 ? old : catalog.chunkLocation(id)), recordPack: () => undefined });
      expect((await stale.get(c.id, c.size)).equals(c.stored)).toBe(true);
      expect(lookups).toBe(2);
    }));

  it('accepts an encrypted chunk it cannot read, checking what it can', () =>
    withStore(async (chunks) => {
      const c = encodeChunk(plain, { level: 3, keys: { encryption: randomBytes(32), id: randomBytes(32) } });
      const writer = chunks.writer();
      writer.add(c.id, c.stored, c.size);
      expect(() => writer.add(c.id, c.stored.subarray(0, 8), c.size)).toThrow(expect.objectContaining({ code: 'integrity' }));
      await writer.flush();
      expect(chunks.has(c.id)).toBe(true);
    }));

  it('fails every later step once a pack cannot be written, and indexes nothing of it', () =>
    withStore(async (chunks, backend, catalog) => {
      const c = encodeChunk(plain, { level: 3 });
      const failing = new ChunkStore(Object.assign(Object.create(backend) as FsBackend, { put: () => Promise.reject(new Error('disk on fire')) }), catalog);
      const writer = failing.writer();
      writer.add(c.id, c.stored, c.size);
      await expect(writer.flush()).rejects.toMatchObject({ code: 'store_failed', message: expect.stringMatching(/disk on fire/) });
      expect(chunks.has(c.id)).toBe(false);
      expect(() => writer.add(c.id, c.stored, c.size)).toThrow(/disk on fire/);
    }));
});

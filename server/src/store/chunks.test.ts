import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeChunk } from '@lifeboat/shared';
import { ChunkStore, chunkKey } from './chunks.js';
import { FsBackend } from '@lifeboat/shared';

async function withStore(test: (chunks: ChunkStore, backend: FsBackend) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-chunks-'));
  try {
    const backend = new FsBackend(dir);
    await test(new ChunkStore(backend), backend);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('ChunkStore', () => {
  const plain = Buffer.from('some content '.repeat(1000));

  it('stores a verified chunk once and returns it verified', () =>
    withStore(async (chunks) => {
      const c = encodeChunk(plain, { level: 3 });
      expect(await chunks.put(c.id, c.stored, c.size)).toEqual({ written: true, storedSize: c.stored.length });
      expect(await chunks.has(c.id)).toBe(true);
      expect((await chunks.get(c.id, c.size)).equals(c.stored)).toBe(true);
      expect(await chunks.put(c.id, c.stored, c.size)).toEqual({ written: false });
    }));

  it('refuses a chunk whose bytes do not match its id, storing nothing', () =>
    withStore(async (chunks) => {
      const c = encodeChunk(plain, { level: 3 });
      const other = encodeChunk(Buffer.from('other'), { level: 3 });
      await expect(chunks.put(c.id, other.stored, other.size)).rejects.toMatchObject({ code: 'integrity' });
      expect(await chunks.has(c.id)).toBe(false);
    }));

  it('refuses a chunk whose size differs from what was announced', () =>
    withStore(async (chunks) => {
      const c = encodeChunk(plain, { level: 3 });
      await expect(chunks.put(c.id, c.stored, c.size + 1)).rejects.toMatchObject({ code: 'integrity' });
    }));

  it('reports a stored chunk damaged on disk instead of returning it', () =>
    withStore(async (chunks, backend) => {
      const c = encodeChunk(randomBytes(5000), { level: 0 });
      await chunks.put(c.id, c.stored, c.size);
      const damaged = Buffer.from(c.stored);
      damaged[200]! ^= 0xff;
      await backend.put(chunkKey(c.id), damaged);
      await expect(chunks.get(c.id, c.size)).rejects.toMatchObject({ code: 'integrity' });
    }));

  it('accepts an encrypted chunk it cannot read, checking what it can', () =>
    withStore(async (chunks) => {
      const c = encodeChunk(plain, { level: 3, keys: { encryption: randomBytes(32), id: randomBytes(32) } });
      await chunks.put(c.id, c.stored, c.size);
      await expect(chunks.put(c.id, c.stored.subarray(0, 8), c.size)).rejects.toMatchObject({ code: 'integrity' });
    }));
});

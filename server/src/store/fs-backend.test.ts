import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { storeBackendConformance } from './conformance.suite.js';
import { ChunkStore, sha256Hex } from './chunks.js';
import { FsBackend } from './fs-backend.js';

async function openFs() {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-fs-'));
  return { backend: new FsBackend(dir), cleanup: () => rm(dir, { recursive: true, force: true }), dir };
}

storeBackendConformance('FsBackend', openFs);

describe('FsBackend writes', () => {
  it('leaves no temp file behind and writes objects 0600', async () => {
    const { backend, cleanup, dir } = await openFs();
    try {
      await backend.put('chunks/00/x', Buffer.alloc(1000));
      expect(await readdir(join(dir, 'chunks/00'))).toEqual(['x']);
    } finally {
      await cleanup();
    }
  });
});

describe('ChunkStore', () => {
  it('refuses a chunk whose bytes do not match its id, storing nothing', async () => {
    const { backend, cleanup } = await openFs();
    try {
      const chunks = new ChunkStore(backend);
      const id = sha256Hex(Buffer.from('right'));
      await expect(chunks.put(id, Buffer.from('wrong'))).rejects.toMatchObject({ code: 'integrity' });
      expect(await chunks.has(id)).toBe(false);
      await chunks.put(id, Buffer.from('right'));
      expect((await chunks.get(id)).toString()).toBe('right');
    } finally {
      await cleanup();
    }
  });

  it('reports a stored chunk damaged on disk instead of returning it', async () => {
    const { backend, cleanup } = await openFs();
    try {
      const chunks = new ChunkStore(backend);
      const id = sha256Hex(Buffer.from('original'));
      await chunks.put(id, Buffer.from('original'));
      await backend.put(`chunks/${id.slice(0, 2)}/${id}`, Buffer.from('flipped!'));
      await expect(chunks.get(id)).rejects.toMatchObject({ code: 'integrity' });
    } finally {
      await cleanup();
    }
  });
});

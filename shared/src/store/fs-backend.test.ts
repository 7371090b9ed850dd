import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { storeBackendConformance } from './conformance.suite.js';
import { FsBackend } from './fs-backend.js';
import { allocateAligned } from './aligned.js';
import { livesInPageCache, pageCacheBytes } from './page-cache.suite.js';

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

  it('writes into a directory removed since its last write (it remembers the directories it made)', async () => {
    const { backend, cleanup, dir } = await openFs();
    try {
      await backend.put('chunks/01/a', Buffer.from('a'));
      await backend.delete('chunks/01/a');
      await rm(join(dir, 'chunks/01'), { recursive: true });
      await backend.put('chunks/01/b', Buffer.from('b'));
      expect((await backend.get('chunks/01/b')).toString()).toBe('b');
    } finally {
      await cleanup();
    }
  });
});

describe('FsBackend direct I/O', () => {
  it('writes a large object from aligned memory past the page cache, to its exact size, and reads ranges of it back past it too', async () => {
    const { backend, cleanup, dir } = await openFs();
    try {
      const size = 3 * 1024 * 1024 + 123;
      const bytes = allocateAligned(size);
      randomBytes(size).copy(bytes);
      await backend.put('packs/aa/direct', bytes);
      const file = join(dir, 'packs/aa/direct');
      expect((await readdir(join(dir, 'packs/aa')))).toEqual(['direct']);
      const cached = livesInPageCache(dir);
      if (!cached) expect(pageCacheBytes(file)).toBe(0);
      // Unaligned ranges, one ending at the object's end.
      expect((await backend.getRange('packs/aa/direct', 4097, 1024 * 1024)).equals(bytes.subarray(4097, 4097 + 1024 * 1024))).toBe(true);
      expect((await backend.getRange('packs/aa/direct', size - 300_000, 300_000)).equals(bytes.subarray(size - 300_000))).toBe(true);
      await expect(backend.getRange('packs/aa/direct', size - 300_000, 300_001)).rejects.toMatchObject({ code: 'integrity' });
      if (!cached) expect(pageCacheBytes(file)).toBe(0);
      // A range larger than the scratch buffers is read the ordinary way.
      expect((await backend.getRange('packs/aa/direct', 100, 2_500_000)).equals(bytes.subarray(100, 2_500_100))).toBe(true);
      expect((await readFile(file)).equals(bytes)).toBe(true);
    } finally {
      await cleanup();
    }
  });

  it('writes an object from ordinary memory through the page cache, as before', async () => {
    const { backend, cleanup, dir } = await openFs();
    try {
      const bytes = randomBytes(1024 * 1024 + 5);
      await backend.put('packs/bb/buffered', bytes);
      if (!livesInPageCache(dir)) expect(pageCacheBytes(join(dir, 'packs/bb/buffered'))).toBeGreaterThan(0);
      expect((await backend.get('packs/bb/buffered')).equals(bytes)).toBe(true);
    } finally {
      await cleanup();
    }
  });
});

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { storeBackendConformance } from './conformance.suite.js';
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

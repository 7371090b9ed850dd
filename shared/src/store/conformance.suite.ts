import { describe, expect, it } from 'vitest';
import type { StoreBackend } from './backend.js';

/** The one suite every StoreBackend runs (restic's backend tests, kopia's VerifyStorage). */
export function storeBackendConformance(name: string, open: () => Promise<{ backend: StoreBackend; cleanup: () => Promise<void> }>): void {
  describe(`${name} conforms to StoreBackend`, () => {
    it('puts, has, gets and deletes objects', async () => {
      const { backend, cleanup } = await open();
      try {
        expect(await backend.has('chunks/ab/abc')).toBe(false);
        await backend.put('chunks/ab/abc', Buffer.from('hello'));
        expect(await backend.has('chunks/ab/abc')).toBe(true);
        expect((await backend.get('chunks/ab/abc')).toString()).toBe('hello');
        await backend.put('chunks/ab/abc', Buffer.from('again'));
        expect((await backend.get('chunks/ab/abc')).toString()).toBe('again');
        await backend.delete('chunks/ab/abc');
        expect(await backend.has('chunks/ab/abc')).toBe(false);
        await backend.delete('chunks/ab/abc');
      } finally {
        await cleanup();
      }
    });

    it('rejects get of a missing object with not_found', async () => {
      const { backend, cleanup } = await open();
      try {
        await expect(backend.get('snapshots/none.json')).rejects.toMatchObject({ code: 'not_found' });
      } finally {
        await cleanup();
      }
    });

    it('lists keys under a prefix, and only those', async () => {
      const { backend, cleanup } = await open();
      try {
        await backend.put('chunks/aa/aa1', Buffer.from('1'));
        await backend.put('chunks/bb/bb2', Buffer.from('2'));
        await backend.put('snapshots/s1.json', Buffer.from('{}'));
        const keys: string[] = [];
        for await (const k of backend.list('chunks/')) keys.push(k);
        expect(keys.sort()).toEqual(['chunks/aa/aa1', 'chunks/bb/bb2']);
        const none: string[] = [];
        for await (const k of backend.list('nothing/')) none.push(k);
        expect(none).toEqual([]);
      } finally {
        await cleanup();
      }
    });

    it('refuses keys that could escape the store', async () => {
      const { backend, cleanup } = await open();
      try {
        for (const key of ['../x', 'chunks/../../x', '/etc/passwd', '', 'a//b']) {
          await expect(backend.put(key, Buffer.from('x'))).rejects.toBeTruthy();
        }
      } finally {
        await cleanup();
      }
    });
  });
}

import { createHash, randomBytes } from 'node:crypto';
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

    it('writes an object from parts, reads a range of it, and refuses one past its end', async () => {
      const { backend, cleanup } = await open();
      try {
        const bytes = randomBytes(100_000);
        await backend.put('packs/ab/range', [bytes.subarray(0, 30_000), bytes.subarray(30_000, 30_000), bytes.subarray(30_000)]);
        expect((await backend.get('packs/ab/range')).equals(bytes)).toBe(true);
        expect((await backend.getRange('packs/ab/range', 0, 10)).equals(bytes.subarray(0, 10))).toBe(true);
        expect((await backend.getRange('packs/ab/range', 54_321, 40_000)).equals(bytes.subarray(54_321, 94_321))).toBe(true);
        expect((await backend.getRange('packs/ab/range', 99_999, 1)).equals(bytes.subarray(99_999))).toBe(true);
        await expect(backend.getRange('packs/ab/range', 99_990, 20)).rejects.toMatchObject({ code: 'integrity' });
        await expect(backend.getRange('packs/ab/range', 100_000, 5)).rejects.toMatchObject({ code: 'integrity' });
        await expect(backend.getRange('packs/ab/none', 0, 5)).rejects.toMatchObject({ code: 'not_found' });
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

    it('refuses escaping keys in every method with bad_request', async () => {
      const { backend, cleanup } = await open();
      try {
        for (const key of ['../x', 'chunks/../../x', '/etc/passwd', '', 'a//b', 'chunks/./x', 'x/']) {
          await expect(backend.put(key, Buffer.from('x'))).rejects.toMatchObject({ code: 'bad_request' });
          await expect(backend.has(key)).rejects.toMatchObject({ code: 'bad_request' });
          await expect(backend.get(key)).rejects.toMatchObject({ code: 'bad_request' });
          await expect(backend.delete(key)).rejects.toMatchObject({ code: 'bad_request' });
        }
      } finally {
        await cleanup();
      }
    });

    it('stores chunk-layout keys and an empty object', async () => {
      const { backend, cleanup } = await open();
      try {
        const id = createHash('sha256').update('a chunk').digest('hex');
        const key = `chunks/${id.slice(0, 2)}/${id}`;
        expect(await backend.has(key)).toBe(false);
        await backend.put(key, Buffer.from('a chunk'));
        expect(await backend.has(key)).toBe(true);
        expect((await backend.get(key)).toString()).toBe('a chunk');
        await backend.put('snapshots/snap_empty.json', Buffer.alloc(0));
        expect(await backend.has('snapshots/snap_empty.json')).toBe(true);
        expect((await backend.get('snapshots/snap_empty.json')).length).toBe(0);
      } finally {
        await cleanup();
      }
    });

    it('round-trips a largest chunk (8 MiB plus a header) byte for byte', async () => {
      const { backend, cleanup } = await open();
      try {
        const bytes = randomBytes(8 * 1024 * 1024 + 64);
        await backend.put('chunks/ff/large', bytes);
        const back = await backend.get('chunks/ff/large');
        expect(back.length).toBe(bytes.length);
        expect(back.equals(bytes)).toBe(true);
      } finally {
        await cleanup();
      }
    });

    it('replaces an object wholly when overwritten with a shorter one', async () => {
      const { backend, cleanup } = await open();
      try {
        await backend.put('snapshots/s.json', Buffer.from('a much longer first version'));
        await backend.put('snapshots/s.json', Buffer.from('short'));
        expect((await backend.get('snapshots/s.json')).toString()).toBe('short');
      } finally {
        await cleanup();
      }
    });

    it('survives concurrent puts of the same chunk', async () => {
      const { backend, cleanup } = await open();
      try {
        // Two agents uploading the same content-addressed chunk at once is the normal case.
        const bytes = randomBytes(1024 * 1024);
        const key = `chunks/${createHash('sha256').update(bytes).digest('hex').slice(0, 2)}/${createHash('sha256').update(bytes).digest('hex')}`;
        await Promise.all(Array.from({ length: 8 }, () => backend.put(key, bytes)));
        expect((await backend.get(key)).equals(bytes)).toBe(true);
        const keys: string[] = [];
        for await (const k of backend.list('chunks/')) keys.push(k);
        expect(keys).toEqual([key]);
      } finally {
        await cleanup();
      }
    });

    it('lists more than a thousand keys, each exactly once', async () => {
      const { backend, cleanup } = await open();
      try {
        const expected: string[] = [];
        for (let i = 0; i < 1100; i++) {
          const id = createHash('sha256').update(`chunk ${i}`).digest('hex');
          expected.push(`chunks/${id.slice(0, 2)}/${id}`);
        }
        await inBatches(expected, 16, (key) => backend.put(key, Buffer.from(key)));
        await backend.put('snapshots/s1.json', Buffer.from('{}'));
        const keys: string[] = [];
        for await (const k of backend.list('chunks/')) keys.push(k);
        expect(keys.length).toBe(expected.length);
        expect([...keys].sort()).toEqual([...expected].sort());
        const all: string[] = [];
        for await (const k of backend.list('')) all.push(k);
        expect(all.length).toBe(expected.length + 1);
        const underAb: string[] = [];
        for await (const k of backend.list('chunks/ab/')) underAb.push(k);
        expect(underAb.sort()).toEqual(expected.filter((k) => k.startsWith('chunks/ab/')).sort());
      } finally {
        await cleanup();
      }
    });

    it('answers has() false and delete() quietly for keys under prefixes that never existed', async () => {
      const { backend, cleanup } = await open();
      try {
        expect(await backend.has('never/was/here')).toBe(false);
        await backend.delete('never/was/here');
        await expect(backend.get('never/was/here')).rejects.toMatchObject({ code: 'not_found' });
      } finally {
        await cleanup();
      }
    });
  });
}

async function inBatches<T>(items: T[], width: number, run: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += width) await Promise.all(items.slice(i, i + width).map(run));
}

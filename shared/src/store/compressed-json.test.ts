import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { compressJson, readJson } from './compressed-json.js';
import { encodePackIndex, packIndexKey, readPackIndex, type PackIndex } from './pack.js';

const index: PackIndex = {
  format: 1,
  pack: 'ab'.repeat(16),
  size: 300,
  chunks: Array.from({ length: 3 }, (_, i) => [String(i).repeat(64), i * 100, 100, 180] as [string, number, number, number]),
};

describe('the store\'s JSON objects', () => {
  it('are written gzip-compressed, and read back compressed or plain (as older versions wrote them)', async () => {
    const written = await compressJson({ a: 1 });
    expect(gunzipSync(written).toString()).toBe('{"a":1}');
    expect(readJson(written)).toEqual({ ok: true, value: { a: 1 } });
    expect(readJson(Buffer.from('{"a":1}'))).toEqual({ ok: true, value: { a: 1 } });
    expect(readJson(written.subarray(0, written.length - 4))).toEqual({ ok: false, problem: 'not valid gzip (truncated or damaged)' });
    expect(readJson(Buffer.from('{"a":'))).toEqual({ ok: false, problem: 'not valid JSON (truncated or damaged)' });
  });

  it('include the pack index objects: half the size, and a damaged one is named', async () => {
    const key = packIndexKey(index.pack);
    const written = await encodePackIndex(index);
    expect(written.length).toBeLessThan(JSON.stringify(index).length * 0.7);
    expect(readPackIndex(written, key)).toEqual(index);
    expect(readPackIndex(Buffer.from(JSON.stringify(index)), key)).toEqual(index);
    expect(() => readPackIndex(written.subarray(0, 20), key)).toThrow(/pack index index\/.*: not valid gzip/);
  });
});

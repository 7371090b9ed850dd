import { promisify } from 'node:util';
import { gunzipSync, gzip } from 'node:zlib';

/**
 * The store's JSON objects (snapshot manifests, pack index objects) as they are written: gzip-compressed. They
 * list chunk ids as 64 hex digits, which compress to about half; gzip rather than zstd so that `zcat` reads one on
 * any machine when the store is all that is left. Off the event loop (zlib's thread pool): a large snapshot's
 * manifest is megabytes.
 */
const gzipAsync = promisify(gzip);

export function compressJson(value: unknown): Promise<Buffer> {
  return gzipAsync(Buffer.from(JSON.stringify(value)));
}

/**
 * Far above any real object (a million chunks is about 100 MB of JSON) and under V8's longest string (about
 * 512 MiB): an object from the (untrusted) store must not inflate without bound.
 */
const MAX_JSON_BYTES = 448 * 1024 * 1024;

/** An object's JSON, parsed: gunzipped first, or as it is when an older Lifeboat stored it uncompressed. */
export function readJson(bytes: Buffer): { ok: true; value: unknown } | { ok: false; problem: string } {
  let text: string;
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) text = bytes.toString('utf8');
  else {
    try {
      text = gunzipSync(bytes, { maxOutputLength: MAX_JSON_BYTES }).toString('utf8');
    } catch (err) {
      const tooLarge = err instanceof RangeError || (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE';
      return { ok: false, problem: tooLarge ? `it inflates past ${MAX_JSON_BYTES} bytes` : 'not valid gzip (truncated or damaged)' };
    }
  }
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false, problem: 'not valid JSON (truncated or damaged)' };
  }
}

import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import * as zstd from 'zstd-napi';
import zstdBinding from 'zstd-napi/binding.js';
import { CHUNK_MAX } from './chunker.js';
import { LifeboatError } from './errors.js';
import { freeNow } from './memory.js';

/**
 * A stored chunk: a 12-byte header, then the payload.
 *   0-2  "LBC"          3  format version (1)
 *   4    compression: 0 none, 1 zstd
 *   5    cipher: 0 none, 1 AES-256-GCM (then: 12-byte nonce, ciphertext, 16-byte tag)
 *   6-7  reserved (0)   8-11  plaintext length, uint32 LE
 * The header (and the chunk id) are authenticated data under encryption, so a stored chunk cannot be swapped
 * for another or have its header edited without the restore noticing.
 */
export const CHUNK_FORMAT_VERSION = 1;
const MAGIC = Buffer.from('LBC');
const HEADER_BYTES = 12;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
export enum Compression {
  None = 0,
  Zstd = 1,
}
export enum Cipher {
  None = 0,
  Aes256Gcm = 1,
}

/** Keys derived from the repository passphrase (see keys.ts): one encrypts, one makes chunk ids. */
export interface ChunkKeys {
  encryption: Buffer;
  id: Buffer;
}

export interface EncodeOptions {
  /** zstd level; 0 stores uncompressed. */
  level: number;
  keys?: ChunkKeys | null;
  /** Free bytes to leave before the stored chunk, so a frame header can be written in front without a copy. */
  headroom?: number;
}

export interface EncodedChunk {
  id: string;
  size: number;
  stored: Buffer;
}

/** SHA-256 of the plaintext, or HMAC-SHA-256 under the id key with encryption on (the store cannot fingerprint content). */
export function chunkId(plain: Uint8Array, keys?: ChunkKeys | null): string {
  return (keys ? createHmac('sha256', keys.id) : createHash('sha256')).update(plain).digest('hex');
}

/**
 * What an artifact records as its SHA-256: a digest of its ordered chunk list (each id and plain size, and a
 * slice's offset and length). Every restore checks each chunk's bytes against its id, so this pins the whole
 * stream as well as a hash of its bytes would, and a backup can compute it for chunks it reused without reading them.
 */
export function chunkListDigest(chunks: Iterable<ChunkListEntry>): string {
  const digest = new ChunkListDigest();
  for (const c of chunks) digest.add(c);
  return digest.digest();
}

interface ChunkListEntry {
  id: string;
  size: number;
  offset?: number | undefined;
  length?: number | undefined;
}

/** chunkListDigest, fed one chunk at a time. A whole chunk's line is as it was before slices existed. */
export class ChunkListDigest {
  private readonly hash = createHash('sha256').update('lifeboat chunk list v1\n');
  add(c: ChunkListEntry): void {
    this.hash.update(c.offset === undefined ? `${c.id} ${c.size}\n` : `${c.id} ${c.size} ${c.offset}+${c.length}\n`);
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

export function encodeChunk(plain: Buffer, options: EncodeOptions): EncodedChunk {
  if (plain.length > CHUNK_MAX) throw new LifeboatError('bad_request', `chunk of ${plain.length} bytes exceeds ${CHUNK_MAX}`);
  const id = chunkId(plain, options.keys);
  let compression = Compression.None;
  let payload: Buffer = plain;
  if (options.level > 0 && plain.length > 64) {
    const compressed = compressToScratch(plain, options.level);
    // Chunks that don't shrink (media, archives, encrypted data) are kept as they are: cheaper to restore.
    if (compressed.length < plain.length - plain.length / 32) {
      compression = Compression.Zstd;
      payload = compressed;
    }
  }
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header[3] = CHUNK_FORMAT_VERSION;
  header[4] = compression;
  header[5] = options.keys ? Cipher.Aes256Gcm : Cipher.None;
  header.writeUInt32LE(plain.length, 8);
  const headroom = options.headroom ?? 0;
  // One allocation holds headroom, header and payload: chunks pass at full speed, and copies cost memory.
  if (!options.keys) {
    const out = Buffer.allocUnsafe(headroom + HEADER_BYTES + payload.length);
    header.copy(out, headroom);
    payload.copy(out, headroom + HEADER_BYTES);
    return { id, size: plain.length, stored: out.subarray(headroom) };
  }
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', options.keys.encryption, nonce);
  cipher.setAAD(Buffer.concat([header, Buffer.from(id, 'hex')]));
  const out = Buffer.allocUnsafe(headroom + HEADER_BYTES + NONCE_BYTES + payload.length + TAG_BYTES);
  header.copy(out, headroom);
  nonce.copy(out, headroom + HEADER_BYTES);
  let at = headroom + HEADER_BYTES + NONCE_BYTES;
  const sealed = cipher.update(payload);
  at += sealed.copy(out, at);
  freeNow(sealed);
  at += cipher.final().copy(out, at);
  cipher.getAuthTag().copy(out, at);
  return { id, size: plain.length, stored: out.subarray(headroom) };
}

/** This thread's compression context, and the scratch buffer it compresses into (see compressToScratch). */
let compressor: zstdBinding.CCtx | null = null;
let scratch: Buffer | null = null;

/**
 * Compresses into a buffer kept for the next chunk, and returns a view of it, valid until the next call: the
 * caller copies it into the stored chunk at once. A fresh buffer per chunk (zstd-napi's own compress makes one,
 * then a trimmed copy) costs page faults and unmaps on every chunk, which showed as a quarter of a backup's CPU.
 */
function compressToScratch(plain: Buffer, level: number): Buffer {
  const bound = zstdBinding.compressBound(plain.length);
  if (!scratch || scratch.length < bound) scratch = Buffer.allocUnsafeSlow(Math.max(bound, scratch ? scratch.length * 2 : 0));
  compressor ??= new zstdBinding.CCtx();
  const length = compressor.compress(scratch, plain, level);
  return scratch.subarray(0, length);
}

export interface ChunkHeader {
  compression: Compression;
  cipher: Cipher;
  plainLength: number;
}

export function readChunkHeader(stored: Buffer): ChunkHeader {
  if (stored.length < HEADER_BYTES || !stored.subarray(0, 3).equals(MAGIC)) throw new LifeboatError('integrity', 'not a Lifeboat chunk (bad header)');
  if (stored[3] !== CHUNK_FORMAT_VERSION) throw new LifeboatError('integrity', `chunk format ${stored[3]} is not supported by this version`);
  const compression = stored[4]!;
  const cipher = stored[5]!;
  if (compression > Compression.Zstd || cipher > Cipher.Aes256Gcm) throw new LifeboatError('integrity', 'chunk header names an unknown compression or cipher');
  const plainLength = stored.readUInt32LE(8);
  if (plainLength > CHUNK_MAX) throw new LifeboatError('integrity', `chunk claims ${plainLength} bytes, more than the maximum ${CHUNK_MAX}`);
  return { compression, cipher, plainLength };
}

/**
 * Decodes and verifies a stored chunk: header, authentication tag, decompressed length (never past what was
 * recorded: a chunk may not inflate), and the id. Any failure is a LifeboatError('integrity').
 */
export function decodeChunk(stored: Buffer, id: string, expectedSize: number | null, keys?: ChunkKeys | null): Buffer {
  const header = readChunkHeader(stored);
  const name = `chunk ${id.slice(0, 16)}…`;
  if (expectedSize !== null && header.plainLength !== expectedSize) {
    throw new LifeboatError('integrity', `${name} holds ${header.plainLength} bytes where ${expectedSize} were recorded`);
  }
  let payload = stored.subarray(HEADER_BYTES);
  if (header.cipher === Cipher.Aes256Gcm) {
    if (!keys) throw new LifeboatError('integrity', `${name} is encrypted; this restore has no passphrase for the repository`);
    if (payload.length < NONCE_BYTES + TAG_BYTES) throw new LifeboatError('integrity', `${name} is too short to be an encrypted chunk`);
    const decipher = createDecipheriv('aes-256-gcm', keys.encryption, payload.subarray(0, NONCE_BYTES));
    decipher.setAAD(Buffer.concat([stored.subarray(0, HEADER_BYTES), Buffer.from(id, 'hex')]));
    decipher.setAuthTag(payload.subarray(payload.length - TAG_BYTES));
    try {
      const opened = decipher.update(payload.subarray(NONCE_BYTES, payload.length - TAG_BYTES));
      const rest = decipher.final();
      // GCM's final() checks the tag and adds no bytes: no copy of the whole chunk to join an empty tail.
      payload = rest.length === 0 ? opened : Buffer.concat([opened, rest]);
    } catch {
      throw new LifeboatError('integrity', `${name} fails authentication: damaged, or encrypted under another passphrase`);
    }
  } else if (keys) {
    throw new LifeboatError('integrity', `${name} is not encrypted, but this repository is`);
  }
  let plain: Buffer;
  if (header.compression === Compression.Zstd) {
    const declared = zstdContentSize(payload);
    if (declared === null || declared !== header.plainLength) {
      throw new LifeboatError('integrity', `${name}: its compressed frame does not declare the recorded size (refusing to inflate it)`);
    }
    try {
      plain = zstd.decompress(payload);
    } catch (err) {
      throw new LifeboatError('integrity', `${name} does not decompress: ${(err as Error).message}`);
    } finally {
      // The deciphered payload, made here and inflated: done with (the stored chunk itself is the caller's).
      if (payload.buffer !== stored.buffer) freeNow(payload);
    }
  } else {
    // A view, not a copy: chunks pass through here at full speed and garbage costs memory.
    plain = payload;
  }
  if (plain.length !== header.plainLength) throw new LifeboatError('integrity', `${name} decodes to ${plain.length} bytes, not ${header.plainLength}`);
  if (chunkId(plain, keys) !== id) throw new LifeboatError('integrity', `${name}: its content does not match its id`);
  return plain;
}

/** The Frame_Content_Size of a zstd frame (RFC 8878 §3.1.1.1), or null when absent or not a single zstd frame. */
export function zstdContentSize(frame: Uint8Array): number | null {
  if (frame.length < 6 || frame[0] !== 0x28 || frame[1] !== 0xb5 || frame[2] !== 0x2f || frame[3] !== 0xfd) return null;
  const descriptor = frame[4]!;
  const fcsFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const dictFlag = descriptor & 3;
  let offset = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag]!;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
  if (fcsBytes === 0 || frame.length < offset + fcsBytes) return null;
  const view = Buffer.from(frame.buffer, frame.byteOffset + offset, fcsBytes);
  offset += fcsBytes;
  switch (fcsBytes) {
    case 1:
      return view[0]!;
    case 2:
      return view.readUInt16LE(0) + 256;
    case 4:
      return view.readUInt32LE(0);
    default: {
      const big = view.readBigUInt64LE(0);
      return big > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(big);
    }
  }
}

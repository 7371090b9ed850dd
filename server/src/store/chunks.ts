import { chunkKey, Cipher, decodeChunk, LifeboatError, readChunkHeader } from '@lifeboat/shared';
import type { StoreBackend } from '@lifeboat/shared';

/** Where a chunk lives in the store: one layout for the server and for agents reading the store directly (manifest.ts). */
export { chunkKey };

/** What a put did: `written` is false when the store already held the chunk (then its stored size is not known here). */
export type PutResult = { written: true; storedSize: number } | { written: false };

/**
 * Content-addressed chunks on top of a backend, kept in the stored format of chunk-codec.ts. The store is
 * untrusted (DESIGN §11): every chunk is checked on the way in and on the way out — fully (decompressed and
 * hashed against its id) when it is not encrypted; when it is, the server holds no key, so it checks the
 * header and length, and the restoring agent checks the authentication tag and the id.
 */
export class ChunkStore {
  constructor(private readonly backend: StoreBackend) {}

  /** Verifies and stores a chunk; a chunk the store already holds is not written again. */
  async put(id: string, stored: Buffer, plainSize: number): Promise<PutResult> {
    verifyStoredChunk(stored, id, plainSize, 'nothing stored');
    if (await this.backend.has(chunkKey(id))) return { written: false };
    await this.backend.put(chunkKey(id), stored);
    return { written: true, storedSize: stored.length };
  }

  /** The stored bytes of a chunk, verified. */
  async get(id: string, plainSize: number | null): Promise<Buffer> {
    const stored = await this.backend.get(chunkKey(id));
    verifyStoredChunk(stored, id, plainSize, 'the stored chunk is damaged');
    return stored;
  }

  has(id: string): Promise<boolean> {
    return this.backend.has(chunkKey(id));
  }
}

export function verifyStoredChunk(stored: Buffer, id: string, plainSize: number | null, consequence: string): void {
  try {
    const header = readChunkHeader(stored);
    if (plainSize !== null && header.plainLength !== plainSize) {
      throw new LifeboatError('integrity', `chunk ${id.slice(0, 16)}… holds ${header.plainLength} bytes where ${plainSize} were announced`);
    }
    if (header.cipher === Cipher.None) decodeChunk(stored, id, plainSize);
  } catch (err) {
    if (err instanceof LifeboatError) throw new LifeboatError('integrity', `${err.message}; ${consequence}`);
    throw err;
  }
}

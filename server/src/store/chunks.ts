import { createHash } from 'node:crypto';
import { LifeboatError } from '@lifeboat/shared';
import type { StoreBackend } from './backend.js';

export function chunkKey(id: string): string {
  return `chunks/${id.slice(0, 2)}/${id}`;
}

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Content-addressed chunks on top of a backend. The store is untrusted (DESIGN §11): every chunk is checked
 * against its id on the way in and on the way out.
 */
export class ChunkStore {
  constructor(private readonly backend: StoreBackend) {}

  /** Verifies and stores a chunk; a chunk the store already holds is not written again. */
  async put(id: string, data: Buffer): Promise<void> {
    const actual = sha256Hex(data);
    if (actual !== id) throw new LifeboatError('integrity', `chunk ${id.slice(0, 12)}… does not match its content (hash ${actual.slice(0, 12)}…); nothing stored`);
    if (await this.backend.has(chunkKey(id))) return;
    await this.backend.put(chunkKey(id), data);
  }

  async get(id: string): Promise<Buffer> {
    const data = await this.backend.get(chunkKey(id));
    if (sha256Hex(data) !== id) throw new LifeboatError('integrity', `stored chunk ${id} is damaged: its content no longer matches its id`);
    return data;
  }

  has(id: string): Promise<boolean> {
    return this.backend.has(chunkKey(id));
  }
}

/**
 * Where the store's objects live (restic's Backend, kept small). Keys are relative paths such as
 * "packs/ab/ab12…" or "snapshots/snap_x.json". One file per backend; all run the same conformance suite.
 */
export interface StoreBackend {
  has(key: string): Promise<boolean>;
  /**
   * Durable when it resolves (never a partial object under `key`); writing an existing key replaces it. Parts
   * are written one after another as one object (a pack), without being copied into one buffer first.
   */
  put(key: string, bytes: Buffer | readonly Buffer[]): Promise<void>;
  /** Rejects with a LifeboatError('not_found') when there is no such object. */
  get(key: string): Promise<Buffer>;
  /**
   * `length` bytes of an object from `offset` (a chunk inside a pack). Rejects with 'not_found' when there is no
   * such object and with 'integrity' when it ends before the range does.
   */
  getRange(key: string, offset: number, length: number): Promise<Buffer>;
  delete(key: string): Promise<void>;
  /** Keys under a prefix, in no particular order. */
  list(prefix: string): AsyncIterable<string>;
}

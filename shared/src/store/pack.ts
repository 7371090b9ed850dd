import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { LifeboatError } from '../errors.js';
import type { StoreBackend } from './backend.js';
import { compressJson, readJson } from './compressed-json.js';

/**
 * Pack files (restic's packs, git's packfiles): the store keeps chunks many to an object, so a backup of many
 * small pieces costs a few durable writes per 8 MiB instead of two fsyncs per chunk.
 *   packs/<first 2 hex>/<packId>   stored chunks (chunk-codec.ts format) back to back, nothing else
 *   index/<packId>.json            which chunk lies where in that pack: written after the pack is durable
 * The server keeps the same index in its catalog; rebuild-catalog and restores without a server read these
 * objects instead. A pack without its index object is an orphan of a crash (garbage collection removes it).
 */
export const PACKS_PREFIX = 'packs/';
export const PACK_INDEX_PREFIX = 'index/';
/** A pack is sealed once it holds this much (or when its upload ends). */
export const PACK_TARGET_BYTES = 8 * 1024 * 1024;
export const PACK_INDEX_FORMAT = 1;

export function newPackId(): string {
  return randomBytes(16).toString('hex');
}

export function packKey(packId: string): string {
  return `${PACKS_PREFIX}${packId.slice(0, 2)}/${packId}`;
}

export function packIndexKey(packId: string): string {
  return `${PACK_INDEX_PREFIX}${packId}.json`;
}

/** The pack id a key under packs/ or index/ names, or null. */
export function packIdOfKey(key: string): string | null {
  return /^packs\/[0-9a-f]{2}\/([0-9a-f]{32})$/.exec(key)?.[1] ?? /^index\/([0-9a-f]{32})\.json$/.exec(key)?.[1] ?? null;
}

const chunkId = z.string().regex(/^[0-9a-f]{64}$/);
const count = z.number().int().nonnegative();

/** One chunk in a pack: [id, offset, stored length, plaintext length]. */
export const PackEntry = z.tuple([chunkId, count, count, count]);
export type PackEntry = z.infer<typeof PackEntry>;

export const PackIndex = z
  .object({ format: z.literal(PACK_INDEX_FORMAT), pack: z.string().regex(/^[0-9a-f]{32}$/), size: count, chunks: z.array(PackEntry) })
  .superRefine((index, ctx) => {
    let end = 0;
    for (const [i, [, offset, length]] of index.chunks.entries()) {
      if (offset !== end) ctx.addIssue({ code: 'custom', path: ['chunks', i], message: `chunk ${i} starts at ${offset}, where the one before it ended at ${end}` });
      end = offset + length;
    }
    if (end !== index.size) ctx.addIssue({ code: 'custom', path: ['size'], message: `the chunks end at ${end}, the pack is ${index.size} bytes` });
  });
export type PackIndex = z.infer<typeof PackIndex>;

/** Compressed (store/compressed-json.ts): about 90 bytes per chunk as JSON, about half that compressed. */
export function encodePackIndex(index: PackIndex): Promise<Buffer> {
  return compressJson(index);
}

/** An index object read back from the (untrusted) store; it must name the pack its key names. */
export function readPackIndex(bytes: Buffer, key: string): PackIndex {
  const read = readJson(bytes);
  if (!read.ok) throw new LifeboatError('integrity', `pack index ${key}: ${read.problem}`);
  const parsed = PackIndex.safeParse(read.value);
  if (!parsed.success) throw new LifeboatError('integrity', `pack index ${key} is damaged: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  if (packIdOfKey(key) !== parsed.data.pack) throw new LifeboatError('integrity', `pack index ${key} describes pack ${parsed.data.pack}, not the one its key names`);
  return parsed.data;
}

/** Where a chunk lies in the store. */
export interface ChunkLocation {
  pack: string;
  offset: number;
  length: number;
}

/** Reading chunks by id, wherever they lie: what a restore needs of the store. */
export interface ChunkReader {
  /** The chunk's stored bytes (unverified); rejects with LifeboatError('not_found') when the store lacks it. */
  readChunk(id: string): Promise<Buffer>;
}

/**
 * The store's chunks located through its index objects alone (no catalog): for restores without a server.
 * Memory: about 150 bytes per chunk in the store.
 */
export class StorePackIndex implements ChunkReader {
  private constructor(
    private readonly backend: Pick<StoreBackend, 'getRange'>,
    private readonly locations: Map<string, ChunkLocation>,
    /** Index objects that could not be read: their chunks read as missing. */
    readonly problems: string[],
  ) {}

  /**
   * Reads every index object. With `only`, keeps the locations of those chunks alone: a restore needs its
   * snapshot's chunks, and memory then follows the snapshot, not the whole store.
   */
  static async load(backend: Pick<StoreBackend, 'list' | 'get' | 'getRange'>, options: { only?: ReadonlySet<string> } = {}): Promise<StorePackIndex> {
    const locations = new Map<string, ChunkLocation>();
    const problems: string[] = [];
    const only = options.only;
    for await (const key of backend.list(PACK_INDEX_PREFIX)) {
      if (!packIdOfKey(key)) continue;
      try {
        const index = readPackIndex(await backend.get(key), key);
        for (const [id, offset, length] of index.chunks) if (!only || only.has(id)) locations.set(id, { pack: index.pack, offset, length });
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    return new StorePackIndex(backend, locations, problems);
  }

  get size(): number {
    return this.locations.size;
  }

  locate(id: string): ChunkLocation | undefined {
    return this.locations.get(id);
  }

  async readChunk(id: string): Promise<Buffer> {
    const at = this.locations.get(id);
    if (!at) throw new LifeboatError('not_found', `the store has no chunk ${id.slice(0, 16)}… (no pack index names it)`);
    return this.backend.getRange(packKey(at.pack), at.offset, at.length);
  }
}

/** Writes one pack and its index object to a store in the order above: for tests and tools that build a store. */
export async function writePack(backend: Pick<StoreBackend, 'put'>, chunks: readonly { id: string; stored: Buffer; plainSize: number }[]): Promise<PackIndex> {
  const pack = newPackId();
  const entries: PackEntry[] = [];
  let offset = 0;
  for (const c of chunks) {
    entries.push([c.id, offset, c.stored.length, c.plainSize]);
    offset += c.stored.length;
  }
  const index: PackIndex = { format: PACK_INDEX_FORMAT, pack, size: offset, chunks: entries };
  await backend.put(packKey(pack), Buffer.concat(chunks.map((c) => c.stored)));
  await backend.put(packIndexKey(pack), await encodePackIndex(index));
  return index;
}

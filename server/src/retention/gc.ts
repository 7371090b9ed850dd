import { describeError, packIdOfKey, packIndexKey, packKey, PACKS_PREFIX, readPackIndex, type Logger, type StoreBackend } from '@lifeboat/shared';
import type { Catalog, ChunkRow, PackRow } from '../catalog/catalog.js';
import type { JobService } from '../jobs.js';
import { verifyStoredChunk } from '../store/chunks.js';

export interface GcReport {
  /** Chunks in the store's index. */
  scanned: number;
  referenced: number;
  /** Unreferenced chunks whose space was given back (their pack deleted or rewritten without them). */
  deleted: number;
  /** Unreferenced, but within the grace period, used by a job in progress, or in a pack not worth rewriting yet. */
  spared: number;
  packsDeleted: number;
  packsRewritten: number;
  bytesFreed: number;
}

/** What a collection needs of the job service: which chunks jobs rely on, and the store's packs being written. */
type GcJobs = Pick<JobService, 'isChunkInFlight' | 'store'>;
type GcOptions = { now: number; graceMs: number; dryRun: boolean; log: Logger };

/** A pack is rewritten once this share of it is garbage (restic prune's default is 5%). */
const REWRITE_GARBAGE_SHARE = 0.05;

/**
 * Mark and sweep over packs: every chunk some snapshot references is marked (a pack at a time, from the catalog's
 * chunk index); an unmarked chunk goes only when it has been unreferenced (or unused) for longer than the grace
 * period and no job in progress relies on it — so a backup uploading during a prune never loses a chunk. A pack
 * with nothing live is deleted; one with enough garbage is rewritten with its live chunks only. Deletion by
 * policy (prune) and collection of garbage are separate steps, as in restic. Also: a pack the catalog does not
 * know but whose index object exists (a rebuilt catalog, a crash before the catalog write) is adopted; one
 * without an index object is an orphan of a crash and deleted.
 */
export function collectGarbage(catalog: Catalog, backend: StoreBackend, jobs: GcJobs, options: GcOptions): Promise<GcReport> {
  // One collection at a time: the admin's prune and the scheduled one must not rewrite the same packs at once.
  const run = collecting.then(() => collectOnce(catalog, backend, jobs, options));
  collecting = run.catch(() => undefined);
  return run;
}

let collecting: Promise<unknown> = Promise.resolve();

async function collectOnce(catalog: Catalog, backend: StoreBackend, jobs: GcJobs, options: GcOptions): Promise<GcReport> {
  const report: GcReport = { scanned: 0, referenced: 0, deleted: 0, spared: 0, packsDeleted: 0, packsRewritten: 0, bytesFreed: 0 };
  await reconcilePacks(catalog, backend, jobs.store, options);
  const rewrite: { pack: PackRow; live: ChunkRow[] }[] = [];
  for (const pack of catalog.listPacks()) {
    // Marked pack by pack, from the catalog as it is now (never a set of every referenced id: bounded memory).
    // From here to the index change, no await: no upload can claim a chunk in between.
    const rows = catalog.chunksInPackMarked(pack.id);
    const live: ChunkRow[] = [];
    const dead: ChunkRow[] = [];
    for (const { referenced, ...row } of rows) {
      report.scanned++;
      if (referenced) {
        report.referenced++;
        live.push(row);
      } else if (options.now - Math.max(row.createdAt, row.lastUsedAt ?? 0) < options.graceMs || jobs.isChunkInFlight(row.id)) {
        report.spared++;
        live.push(row);
      } else {
        dead.push(row);
      }
    }
    const liveBytes = live.reduce((n, r) => n + r.storedSize, 0);
    if (live.length === 0) {
      report.deleted += dead.length;
      report.packsDeleted++;
      report.bytesFreed += pack.size;
      if (options.dryRun) continue;
      catalog.deletePack(pack.id);
      await removePack(backend, pack.id, options.log);
    } else if (pack.size - liveBytes > pack.size * REWRITE_GARBAGE_SHARE) {
      report.deleted += dead.length;
      report.packsRewritten++;
      report.bytesFreed += pack.size - liveBytes;
      if (options.dryRun) continue;
      // Dead chunks leave the index now (an upload wanting one sends it again); live ones move with the rewrite.
      catalog.deleteChunkRows(dead.map((r) => r.id));
      rewrite.push({ pack, live });
    } else {
      report.spared += dead.length;
    }
  }
  if (rewrite.length > 0) await rewritePacks(catalog, backend, jobs.store, rewrite, options.log);
  options.log.info('garbage collection done', { ...report, dryRun: options.dryRun || undefined });
  return report;
}

/** Copies the live chunks of each pack into new packs, then deletes the old ones. */
async function rewritePacks(catalog: Catalog, backend: StoreBackend, store: JobService['store'], rewrite: { pack: PackRow; live: ChunkRow[] }[], log: Logger): Promise<void> {
  const writer = store.writer({ move: true });
  const done: string[] = [];
  for (const { pack, live } of rewrite) {
    let bytes: Buffer;
    try {
      bytes = await backend.get(packKey(pack.id));
    } catch (err) {
      log.error('could not read a pack to rewrite it; left as it is', { pack: pack.id, error: describeError(err).message });
      continue;
    }
    for (const row of live) {
      const stored = bytes.subarray(row.packOffset, row.packOffset + row.storedSize);
      try {
        verifyStoredChunk(stored, row.id, row.plainSize, 'not copied');
        writer.add(row.id, Buffer.from(stored), row.plainSize);
      } catch (err) {
        // Not copied, so no longer indexed: `verify` reports the snapshots it breaks; the next backup sends it anew.
        log.error('damaged chunk dropped while rewriting its pack', { chunk: row.id, pack: pack.id, error: describeError(err).message });
      }
      await writer.ready();
    }
    done.push(pack.id);
  }
  await writer.flush();
  for (const packId of done) {
    catalog.deletePack(packId);
    await removePack(backend, packId, log);
  }
}

/** Index object first: a pack without one is an orphan the next collection removes, never a half-indexed pack. */
async function removePack(backend: StoreBackend, packId: string, log: Logger): Promise<void> {
  try {
    await backend.delete(packIndexKey(packId));
    await backend.delete(packKey(packId));
  } catch (err) {
    log.warn('could not delete a pack; the next garbage collection tries again', { pack: packId, error: describeError(err).message });
  }
}

/**
 * Brings the catalog's pack list in line with the store's objects (see collectGarbage). Each pack is judged on
 * what is true when it is reached, never on an earlier listing: a writer seals packs all the while (pack, index
 * object, catalog rows), and a pack it finished after a listing of index objects is not an orphan. A pack this
 * process is not writing and the catalog does not know was either left by a crash or indexed elsewhere; only
 * then does its index object decide.
 */
async function reconcilePacks(catalog: Catalog, backend: StoreBackend, store: JobService['store'], options: GcOptions): Promise<void> {
  for await (const key of backend.list(PACKS_PREFIX)) {
    const id = packIdOfKey(key);
    if (!id || catalog.hasPack(id) || store.isWriting(id)) continue;
    if (!(await backend.has(packIndexKey(id)))) {
      options.log.warn('orphan pack (no index object; left by a crash) deleted', { pack: id, dryRun: options.dryRun || undefined });
      if (!options.dryRun) await backend.delete(key);
      continue;
    }
    try {
      const index = readPackIndex(await backend.get(packIndexKey(id)), packIndexKey(id));
      if (!options.dryRun) {
        catalog.recordPack(index, options.now);
      }
      options.log.info('pack adopted into the catalog from its index object', { pack: id, chunks: index.chunks.length });
    } catch (err) {
      options.log.error('pack with an unreadable index object left alone', { pack: id, error: describeError(err).message });
    }
  }
}

import type { Logger, StoreBackend } from '@lifeboat/shared';
import type { Catalog } from '../catalog/catalog.js';
import type { JobService } from '../jobs.js';

export interface GcReport {
  /** Chunks in the store. */
  scanned: number;
  referenced: number;
  deleted: number;
  /** Unreferenced, but within the grace period (or used by a job in progress): kept for now. */
  spared: number;
}

const CHUNK_KEY = /^chunks\/[0-9a-f]{2}\/([0-9a-f]{64})$/;

/**
 * Mark and sweep: every chunk some snapshot references is marked; an unmarked chunk is deleted only when it
 * has been unreferenced (or unused) for longer than the grace period and no job in progress relies on it —
 * so a backup uploading during a prune never loses a chunk. Deletion by policy (prune) and collection of
 * garbage are separate steps, as in restic.
 */
export async function collectGarbage(
  catalog: Catalog,
  backend: StoreBackend,
  jobs: Pick<JobService, 'deleteChunkUnlessInFlight'>,
  options: { now: number; graceMs: number; dryRun: boolean; log: Logger },
): Promise<GcReport> {
  const marked = catalog.referencedChunkIds();
  const report: GcReport = { scanned: 0, referenced: 0, deleted: 0, spared: 0 };
  for await (const key of backend.list('chunks/')) {
    const id = CHUNK_KEY.exec(key)?.[1];
    if (!id) continue;
    report.scanned++;
    if (marked.has(id)) {
      report.referenced++;
      continue;
    }
    const row = catalog.chunkRow(id);
    if (!row) {
      // Never seen by the catalog (older store, rebuilt catalog): its unreferenced time starts now.
      if (!options.dryRun) catalog.noteChunkSeen(id, options.now);
      report.spared++;
      continue;
    }
    const lastUse = Math.max(row.createdAt, row.lastUsedAt ?? 0);
    if (options.now - lastUse < options.graceMs) {
      report.spared++;
      continue;
    }
    if (options.dryRun) {
      report.deleted++;
      continue;
    }
    const deleted = await jobs.deleteChunkUnlessInFlight(id, () => backend.delete(key));
    if (deleted) {
      catalog.deleteChunkRows([id]);
      report.deleted++;
    } else {
      report.spared++;
    }
  }
  options.log.info('garbage collection done', { ...report, dryRun: options.dryRun || undefined });
  return report;
}

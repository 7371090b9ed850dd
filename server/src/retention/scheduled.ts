import { describeError, type Logger, type StoreBackend } from '@lifeboat/shared';
import type { Catalog } from '../catalog/catalog.js';
import type { JobService } from '../jobs.js';
import { collectGarbage } from './gc.js';
import { planPrune, removeSnapshots } from './prune.js';

/**
 * The server's own prune: retention for every plan whose newest backup succeeded (DESIGN §11: no retention
 * runs after a failed backup), then garbage collection.
 */
export async function scheduledPrune(catalog: Catalog, backend: StoreBackend, jobs: JobService, options: { now: number; graceMs: number; log: Logger }): Promise<void> {
  try {
    const reports = planPrune(catalog, options.now).filter((report) => {
      const last = catalog.listJobs({ planId: report.planId, limit: 20 }).find((j) => j.kind === 'backup' && ['succeeded', 'failed'].includes(j.status));
      if (last?.status === 'failed') {
        options.log.warn('retention skipped: the plan\'s newest backup failed', { plan: report.planId, job: last.id });
        return false;
      }
      return true;
    });
    await removeSnapshots(catalog, backend, reports, options.now, options.log);
    await collectGarbage(catalog, backend, jobs, { now: options.now, graceMs: options.graceMs, dryRun: false, log: options.log });
  } catch (err) {
    options.log.error('scheduled prune failed', { error: describeError(err).message });
  }
}

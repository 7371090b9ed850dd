import { describeError, LifeboatError, snapshotManifestKey, type Logger, type StoreBackend } from '@lifeboat/shared';
import type { Catalog } from '../catalog/catalog.js';
import { applyRetention, type Decision } from './policy.js';

export interface PlanPruneReport {
  planId: string;
  keep: Decision[];
  remove: Decision[];
  /** Why nothing was removed for this plan, when that is the case for a reason other than the policy. */
  skipped?: string;
}

/**
 * What each plan's retention policy keeps and removes, and why (applyRetention). Pure reading: `--dry-run`
 * shows exactly this, and a real prune removes exactly `remove`.
 */
export function planPrune(catalog: Catalog, now: number, planId?: string): PlanPruneReport[] {
  const rows = planId ? [catalog.plan(planId)].filter((r) => r !== undefined) : catalog.listPlans();
  if (planId && rows.length === 0) throw new LifeboatError('not_found', `no plan "${planId}"`);
  return rows.map(({ plan }) => {
    const verified = catalog.drillVerifiedSnapshots(plan.id);
    const snapshots = catalog.listSnapshots({ planId: plan.id, limit: 1_000_000 }).map((s) => ({
      id: s.id,
      createdAt: s.createdAt,
      status: s.status,
      drillVerified: verified.has(s.id),
    }));
    const result = applyRetention(snapshots, plan.retention, { now: new Date(now), ...(plan.timezone ? { timeZone: plan.timezone } : {}) });
    return { planId: plan.id, keep: result.keep, remove: result.remove };
  });
}

/**
 * Removes what the policy removes: the manifest in the store first, then the catalog rows. Chunks are left for
 * garbage collection, which spares whatever a catalog row still references. In this order a manifest never
 * outlives its row: a prune cut off between the two leaves a row without a manifest (the next prune removes it;
 * the snapshot stays restorable meanwhile, its chunks being referenced), never a manifest whose chunks garbage
 * collection may delete, which rebuild-catalog would bring back as a snapshot that cannot be restored.
 */
export async function removeSnapshots(catalog: Catalog, backend: StoreBackend, reports: PlanPruneReport[], now: number, log: Logger): Promise<number> {
  let removed = 0;
  for (const report of reports) {
    for (const decision of report.remove) {
      try {
        await backend.delete(snapshotManifestKey(decision.id));
      } catch (err) {
        throw new LifeboatError('store_failed', `snapshot ${decision.id}: its manifest could not be deleted from the store, so the snapshot was kept (${describeError(err).message}); prune again once the store is reachable`);
      }
      catalog.deleteSnapshot(decision.id, now);
      removed++;
      log.info('snapshot removed by retention', { plan: report.planId, snapshot: decision.id, why: decision.reasons.join('; ') });
    }
  }
  return removed;
}

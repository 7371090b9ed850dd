import type { AgentView, DrillView, JobView, SnapshotView } from '@lifeboat/shared';
import { ArtifactMetadata } from '@lifeboat/shared';
import type { AgentRow, ArtifactRow, Catalog, DrillRow, JobRow, SnapshotRow } from './catalog/catalog.js';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function agentView(row: AgentRow, online: boolean): AgentView {
  return {
    id: row.id,
    name: row.name,
    labels: row.labels,
    online,
    hostname: row.hostname,
    version: row.version,
    tools: row.tools,
    createdAt: iso(row.createdAt)!,
    lastSeenAt: iso(row.lastSeenAt),
    revokedAt: iso(row.revokedAt),
  };
}

export function jobView(row: JobRow, agentName: string): JobView {
  return {
    id: row.id,
    kind: row.kind,
    planId: row.planId,
    agentName,
    status: row.status,
    trigger: row.trigger,
    createdAt: iso(row.createdAt)!,
    startedAt: iso(row.startedAt),
    finishedAt: iso(row.finishedAt),
    error: row.errorCode ? { code: row.errorCode as NonNullable<JobView['error']>['code'], message: row.errorMessage ?? '' } : null,
    warnings: row.warnings,
    progress: row.progress ?? null,
    snapshotId: row.snapshotId,
    summary: row.summary,
  };
}

export function snapshotView(row: SnapshotRow, agentName: string, artifacts: ArtifactRow[]): SnapshotView {
  return {
    id: row.id,
    planId: row.planId,
    agentName,
    jobId: row.jobId,
    status: row.status,
    damagedReason: row.damagedReason,
    createdAt: iso(row.createdAt)!,
    startedAt: iso(row.startedAt)!,
    durationMs: row.createdAt - row.startedAt,
    size: row.size,
    artifacts: artifacts.map((a) => ({
      id: a.id,
      step: a.step,
      kind: a.kind,
      name: a.name,
      size: a.size,
      sha256: a.sha256,
      chunkCount: a.chunkCount,
      metadata: ArtifactMetadata.parse(a.metadata),
    })),
  };
}

/** Agent names by id, for views that show names; one query per call instead of one per row. */
export function agentNames(catalog: Catalog): (id: string) => string {
  const names = new Map(catalog.listAgents().map((a) => [a.id, a.name]));
  return (id) => names.get(id) ?? id;
}

export function drillView(row: DrillRow, agentName: string | null): DrillView {
  return {
    id: row.id,
    planId: row.planId,
    snapshotId: row.snapshotId,
    agentName,
    jobId: row.jobId,
    status: row.status,
    trigger: row.trigger,
    createdAt: iso(row.createdAt)!,
    startedAt: iso(row.startedAt),
    finishedAt: iso(row.finishedAt),
    restoreMs: row.restoreMs,
    bytesRestored: row.bytesRestored,
    checks: row.checks,
    error: row.error,
  };
}

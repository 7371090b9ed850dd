import { z } from 'zod';
import { Labels, SafeName, AbsolutePath } from './ids.js';
import { ToolInfo, ArtifactMetadata, DrillCheckResult, HostRewrite, MysqlTarget, PostgresTarget, WireError } from './protocol.js';
import { Duration, Plan } from './plan.js';
import { parseDuration } from './duration.js';
import { EncryptionSettings, EncryptionState } from './keys.js';

/** HTTP API bodies, parsed on both ends. Errors are always `{ error: { code, message, details? } }`. */
export const ApiError = z.object({ error: WireError.extend({ details: z.array(z.string()).optional() }) });
export type ApiError = z.infer<typeof ApiError>;

export const Health = z.object({ ok: z.literal(true), version: z.string(), serverTime: z.string() });

export const TokenCreateRequest = z.object({ expires: Duration.default('24h') }).strict();
export const TokenCreateResponse = z.object({ token: z.string(), expiresAt: z.string() });

export const EnrollRequest = z
  .object({ token: z.string().min(1, 'required'), name: SafeName, labels: Labels.default({}), hostname: z.string().max(255).default('') })
  .strict();
export type EnrollRequest = z.infer<typeof EnrollRequest>;
export const EnrollResponse = z.object({ agentId: z.string(), name: z.string(), secret: z.string() });

export const AgentView = z.object({
  id: z.string(),
  name: z.string(),
  labels: Labels,
  online: z.boolean(),
  hostname: z.string().nullable(),
  version: z.string().nullable(),
  tools: z.array(ToolInfo),
  createdAt: z.string(),
  lastSeenAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
});
export type AgentView = z.infer<typeof AgentView>;

export const PlanView = z.object({ plan: Plan, createdAt: z.string(), updatedAt: z.string() });
export type PlanView = z.infer<typeof PlanView>;
export const PlanApplyResponse = z.object({ created: z.array(z.string()), updated: z.array(z.string()), unchanged: z.array(z.string()) });

export const JobStatus = z.enum(['queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled']);
export type JobStatus = z.infer<typeof JobStatus>;
export const FINISHED_JOB_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'cancelled'];
/** GET /v1/jobs/:id?wait=MS: hold the answer until the job ends, for at most MS (30 s). */
export const JobWaitQuery = z.object({ wait: z.coerce.number().int().min(0).max(30_000).optional() });
export const JobKind = z.enum(['backup', 'restore', 'drill']);
export type JobKind = z.infer<typeof JobKind>;

export const JobProgress = z.object({ phase: z.string(), bytes: z.number(), totalBytes: z.number().optional(), at: z.string() });
export const JobView = z.object({
  id: z.string(),
  kind: JobKind,
  planId: z.string().nullable(),
  agentName: z.string(),
  status: JobStatus,
  trigger: z.string(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  error: WireError.nullable(),
  warnings: z.array(z.string()),
  progress: JobProgress.nullable(),
  snapshotId: z.string().nullable(),
  summary: z.string().nullable(),
});
export type JobView = z.infer<typeof JobView>;

export const ArtifactView = z.object({
  id: z.string(),
  step: z.number(),
  kind: z.string(),
  name: z.string(),
  size: z.number(),
  sha256: z.string(),
  chunkCount: z.number(),
  metadata: ArtifactMetadata,
});
export const SnapshotView = z.object({
  id: z.string(),
  planId: z.string(),
  agentName: z.string(),
  jobId: z.string(),
  status: z.enum(['complete', 'damaged']),
  damagedReason: z.string().nullable().optional(),
  createdAt: z.string(),
  startedAt: z.string(),
  durationMs: z.number(),
  size: z.number(),
  artifacts: z.array(ArtifactView),
});
export type SnapshotView = z.infer<typeof SnapshotView>;

export const BackupNowResponse = z.object({ job: JobView });
export const RestoreRequest = z
  .object({
    snapshotId: z.string().min(1),
    agent: SafeName,
    /** Files, SQLite databases and command artifacts go here; so do database dumps without a database target. */
    to: AbsolutePath.optional(),
    toPostgres: PostgresTarget.omit({ kind: true }).optional(),
    toMysql: MysqlTarget.omit({ kind: true }).optional(),
    force: z.boolean().default(false),
    /** Only these artifacts (by step index, from 0); all by default. */
    artifacts: z.array(z.number().int().min(0)).optional(),
    /** pydio-cells: rewrite OLD host to NEW in the restored configuration. */
    rewriteHosts: z.array(HostRewrite).default([]),
  })
  .strict()
  .refine((r) => r.to || r.toPostgres || r.toMysql, { message: 'give a target: to, toPostgres or toMysql', path: ['to'] });
export type RestoreRequest = z.infer<typeof RestoreRequest>;

export const EncryptionView = z.object({ encryption: EncryptionSettings.nullable(), state: EncryptionState });

/** What the store holds for some snapshots (`lifeboat stats`). */
export const StorageFigures = z.object({
  snapshots: z.number().int().min(0),
  /** The artifacts' sizes added up over every snapshot: what was backed up. */
  bytesIn: z.number().min(0),
  /** Distinct chunks the snapshots reference. */
  uniqueChunks: z.number().int().min(0),
  /** The stored (compressed, maybe encrypted) size of those chunks, each counted once. */
  bytesStored: z.number().min(0),
  /** Referenced chunks in no pack's index (their index object was lost): counted at their plain size in bytesStored. */
  chunksWithoutStoredSize: z.number().int().min(0),
  /** bytesIn / bytesStored (deduplication and compression together); null when nothing is stored. */
  dedupRatio: z.number().nullable(),
});
export type StorageFigures = z.infer<typeof StorageFigures>;
/** Per plan (a chunk shared by plans counts in each of them) and in total (where it counts once). */
export const StatsView = z.object({ plans: z.array(StorageFigures.extend({ planId: z.string() })), total: StorageFigures });
export type StatsView = z.infer<typeof StatsView>;

export const DrillView = z.object({
  id: z.string(),
  planId: z.string(),
  snapshotId: z.string(),
  agentName: z.string().nullable(),
  jobId: z.string().nullable(),
  status: z.enum(['queued', 'running', 'passed', 'failed']),
  trigger: z.string(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  restoreMs: z.number().nullable(),
  bytesRestored: z.number().nullable(),
  checks: z.array(DrillCheckResult),
  error: z.string().nullable(),
});
export type DrillView = z.infer<typeof DrillView>;
export const DrillRunRequest = z.object({ snapshotId: z.string().optional() }).strict();

export const PruneRequest = z
  .object({
    plan: z.string().optional(),
    dryRun: z.boolean().default(false),
    grace: z.string().refine((g) => /^0[smhdw]?$/.test(g) || parseDuration(g) !== null, 'a duration such as "0s", "1h", "24h"').optional(),
  })
  .strict();
export const VerifyRequest = z.object({ plan: z.string().optional(), readData: z.boolean().default(false) }).strict();

export const RetentionDecision = z.object({ id: z.string(), reasons: z.array(z.string()) });
export const PruneReport = z.object({
  dryRun: z.boolean(),
  plans: z.array(z.object({ planId: z.string(), keep: z.array(RetentionDecision), remove: z.array(RetentionDecision) })),
  removed: z.number(),
  gc: z.object({ scanned: z.number(), referenced: z.number(), deleted: z.number(), spared: z.number(), packsDeleted: z.number(), packsRewritten: z.number(), bytesFreed: z.number() }),
});
export type PruneReport = z.infer<typeof PruneReport>;
export const VerifyReport = z.object({
  snapshots: z.number(),
  chunks: z.number(),
  readData: z.boolean(),
  problems: z.array(z.object({ chunkId: z.string(), problem: z.string(), snapshots: z.array(z.string()) })),
  damaged: z.array(z.string()),
});
export type VerifyReport = z.infer<typeof VerifyReport>;

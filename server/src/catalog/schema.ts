import { customType, index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { hexIdBytes, hexIdOf } from './hex-id.js';

/** Times are milliseconds since the epoch by the server's clock (DESIGN §11: the agent's clock is metadata only). */

/**
 * A hex id (a chunk's SHA-256, a pack's 128 random bits) kept as its bytes: half the size in its row and in every
 * index that holds it. The chunk tables hold each new chunk's id four times (a row and an index each): 436 bytes
 * of catalog per new chunk as hex, 260 as bytes. The code sees the lowercase hex string.
 * The columns stay declared text, as migration 0000 made them: SQLite keeps a blob as given in any column, and
 * migration 0006 turned the hex strings already there into blobs.
 */
const hexId = customType<{ data: string; driverData: Buffer }>({
  dataType: () => 'text',
  toDriver: hexIdBytes,
  fromDriver: hexIdOf,
});

export const agents = sqliteTable('agents', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  labels: text('labels', { mode: 'json' }).$type<Record<string, string>>().notNull(),
  /** SHA-256 of the agent's secret; the secret itself is only ever on the agent (0600). */
  secretHash: text('secret_hash').notNull(),
  createdAt: integer('created_at').notNull(),
  lastSeenAt: integer('last_seen_at'),
  revokedAt: integer('revoked_at'),
  hostname: text('hostname'),
  version: text('version'),
  tools: text('tools', { mode: 'json' }).$type<{ name: string; version: string; path: string }[]>().notNull(),
}, (t) => [uniqueIndex('agents_name').on(t.name)]);

export const enrollmentTokens = sqliteTable('enrollment_tokens', {
  id: text('id').primaryKey(),
  tokenHash: text('token_hash').notNull(),
  createdAt: integer('created_at').notNull(),
  expiresAt: integer('expires_at').notNull(),
  usedAt: integer('used_at'),
  usedByAgentId: text('used_by_agent_id'),
}, (t) => [uniqueIndex('enrollment_tokens_hash').on(t.tokenHash)]);

export const plans = sqliteTable('plans', {
  id: text('id').primaryKey(),
  agentName: text('agent_name').notNull(),
  /** The validated plan as applied (shared Plan schema), re-parsed on read. */
  body: text('body', { mode: 'json' }).$type<unknown>().notNull(),
  createdAt: integer('created_at').notNull(),
  updatedAt: integer('updated_at').notNull(),
});

export const jobs = sqliteTable('jobs', {
  id: text('id').primaryKey(),
  kind: text('kind', { enum: ['backup', 'restore', 'drill'] }).notNull(),
  planId: text('plan_id'),
  agentId: text('agent_id').notNull(),
  status: text('status', { enum: ['queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled'] }).notNull(),
  trigger: text('trigger').notNull(),
  /** What the job was asked to do (a restore's snapshot and target). */
  params: text('params', { mode: 'json' }).$type<unknown>(),
  createdAt: integer('created_at').notNull(),
  dispatchedAt: integer('dispatched_at'),
  startedAt: integer('started_at'),
  finishedAt: integer('finished_at'),
  errorCode: text('error_code'),
  errorMessage: text('error_message'),
  warnings: text('warnings', { mode: 'json' }).$type<string[]>().notNull(),
  progress: text('progress', { mode: 'json' }).$type<{ phase: string; bytes: number; totalBytes?: number; at: string } | null>(),
  snapshotId: text('snapshot_id'),
  summary: text('summary'),
}, (t) => [index('jobs_plan_status').on(t.planId, t.status), index('jobs_agent_status').on(t.agentId, t.status)]);

export const snapshots = sqliteTable('snapshots', {
  id: text('id').primaryKey(),
  planId: text('plan_id').notNull(),
  agentId: text('agent_id').notNull(),
  jobId: text('job_id').notNull(),
  /**
   * A snapshot row is the last write of a successful backup, so it starts 'complete'; `verify` marks it
   * 'damaged' when a chunk it references is missing or corrupt (with why in damagedReason).
   */
  status: text('status', { enum: ['complete', 'damaged'] }).notNull(),
  damagedReason: text('damaged_reason'),
  createdAt: integer('created_at').notNull(),
  startedAt: integer('started_at').notNull(),
  size: integer('size').notNull(),
}, (t) => [index('snapshots_plan').on(t.planId, t.createdAt)]);

export const artifacts = sqliteTable('artifacts', {
  id: text('id').primaryKey(),
  snapshotId: text('snapshot_id').notNull().references(() => snapshots.id, { onDelete: 'cascade' }),
  step: integer('step').notNull(),
  kind: text('kind').notNull(),
  name: text('name').notNull(),
  size: integer('size').notNull(),
  sha256: text('sha256').notNull(),
  chunkCount: integer('chunk_count').notNull(),
  metadata: text('metadata', { mode: 'json' }).$type<unknown>().notNull(),
  /** The number its chunk list's rows carry (artifactChunks.list): a small integer, not the id, in every row. */
  chunkList: integer('chunk_list'),
}, (t) => [index('artifacts_snapshot').on(t.snapshotId), uniqueIndex('artifacts_chunk_list').on(t.chunkList)]);

/**
 * A number for each chunk id the chunk lists use, so a list's row holds a small integer rather than the 64
 * characters of the id. Every snapshot lists all its chunks, changed or not: with the id in each row, the
 * chunk lists were about 260 bytes per chunk per snapshot (2 MB per snapshot of the 1 GiB benchmark), now about
 * 35. A row lives while some list uses it (Catalog.deleteSnapshot removes the ones it leaves unused).
 */
export const chunkNumbers = sqliteTable('chunk_numbers', {
  num: integer('num').primaryKey(),
  id: hexId('id').notNull(),
}, (t) => [uniqueIndex('chunk_numbers_id').on(t.id)]);

/**
 * An artifact's ordered chunk list: a table rather than JSON so a large artifact and garbage collection stay
 * cheap. WITHOUT ROWID in its migration (drizzle cannot say so here): the primary key is the table.
 */
export const artifactChunks = sqliteTable('artifact_chunks', {
  list: integer('list').notNull().references(() => artifacts.chunkList, { onDelete: 'cascade' }),
  seq: integer('seq').notNull(),
  chunk: integer('chunk').notNull().references(() => chunkNumbers.num),
  /** The whole chunk's plaintext size, also when the artifact uses only a slice of it. */
  size: integer('size').notNull(),
  /** A slice (protocol.ts ChunkUse): where in the chunk's plaintext, and how many bytes; null for the whole chunk. */
  sliceOffset: integer('slice_offset'),
  sliceLength: integer('slice_length'),
}, (t) => [primaryKey({ columns: [t.list, t.seq] }), index('artifact_chunks_chunk').on(t.chunk)]);

/**
 * The store's chunk index: which pack holds each chunk, where, and what it costs (shared/src/store/pack.ts).
 * Rows are written when their pack is durable, so a row means the store holds the chunk. The store's own
 * index objects say the same; rebuild-catalog and garbage collection read those.
 */
export const chunks = sqliteTable('chunks', {
  id: hexId('id').primaryKey(),
  packId: hexId('pack_id').notNull(),
  packOffset: integer('pack_offset').notNull(),
  storedSize: integer('stored_size').notNull(),
  plainSize: integer('plain_size').notNull(),
  createdAt: integer('created_at').notNull(),
  /**
   * Last time an upload relied on this chunk (stored it, or was told the store has it). Garbage collection
   * spares chunks used within its grace period, so a backup in flight never loses a chunk it counts on.
   */
  lastUsedAt: integer('last_used_at'),
}, (t) => [index('chunks_pack').on(t.packId)]);

/** Every pack in the store, with its size: what garbage collection weighs live chunks against. */
export const packs = sqliteTable('packs', {
  id: hexId('id').primaryKey(),
  size: integer('size').notNull(),
  chunkCount: integer('chunk_count').notNull(),
  createdAt: integer('created_at').notNull(),
});

/** Restore drills: a snapshot restored into scratch on an isolated agent, checked, timed, torn down. */
export const drills = sqliteTable('drills', {
  id: text('id').primaryKey(),
  planId: text('plan_id').notNull(),
  snapshotId: text('snapshot_id').notNull(),
  agentId: text('agent_id'),
  jobId: text('job_id'),
  status: text('status', { enum: ['queued', 'running', 'passed', 'failed'] }).notNull(),
  trigger: text('trigger').notNull(),
  createdAt: integer('created_at').notNull(),
  startedAt: integer('started_at'),
  finishedAt: integer('finished_at'),
  /** Measured restore time (the RTO), ms: from the first chunk fetched to the last artifact restored. */
  restoreMs: integer('restore_ms'),
  bytesRestored: integer('bytes_restored'),
  /** Every check with its outcome: [{ name, ok, detail }]. */
  checks: text('checks', { mode: 'json' }).$type<{ name: string; ok: boolean; detail: string }[]>().notNull(),
  error: text('error'),
}, (t) => [index('drills_plan').on(t.planId, t.createdAt), index('drills_snapshot').on(t.snapshotId)]);

import { and, asc, count, desc, eq, getTableColumns, inArray, sql, type SQL, type SQLWrapper } from 'drizzle-orm';
import { LifeboatError, Plan, type ChunkUse, type JobStatus, type PackIndex, type Plan as PlanT } from '@lifeboat/shared';
import type { CatalogDb } from './db.js';
import type { Statement } from 'better-sqlite3';
import { hexIdBytes, hexIdOf } from './hex-id.js';
import { agents, artifactChunks, artifacts, chunkNumbers, chunks, drills, enrollmentTokens, jobs, packs, plans, snapshots } from './schema.js';

export type AgentRow = typeof agents.$inferSelect;
export type JobRow = typeof jobs.$inferSelect;
export type SnapshotRow = typeof snapshots.$inferSelect;
/** An artifact as the rest of the server sees it: its chunk list's number is the catalog's own business. */
export type ArtifactRow = Omit<typeof artifacts.$inferSelect, 'chunkList'>;
export type PlanRow = { plan: PlanT; createdAt: number; updatedAt: number };

export const ACTIVE_JOB_STATUSES: JobStatus[] = ['queued', 'dispatched', 'running'];

export interface NewArtifact {
  id: string;
  step: number;
  kind: string;
  name: string;
  size: number;
  sha256: string;
  metadata: unknown;
  chunks: ChunkUse[];
}

export interface NewSnapshot {
  id: string;
  planId: string;
  agentId: string;
  jobId: string;
  createdAt: number;
  startedAt: number;
  artifacts: NewArtifact[];
}

export type ChunkRow = typeof chunks.$inferSelect;
export type PackRow = typeof packs.$inferSelect;
export type DrillRow = typeof drills.$inferSelect;

/** What the store holds, counted over the snapshots in the catalog (`lifeboat stats`). */
export interface StoreFigures {
  snapshots: number;
  /** The artifacts' sizes added up over every snapshot: what was backed up. */
  bytesIn: number;
  /** Distinct chunks the snapshots reference. */
  uniqueChunks: number;
  /** Stored (compressed, encrypted) sizes of those chunks, each counted once. */
  bytesStored: number;
  /** Referenced chunks in no pack's index (so of unknown stored size), counted at their plain size instead. */
  chunksWithoutStoredSize: number;
}

type Tx = Parameters<Parameters<CatalogDb['transaction']>[0]>[0];

/**
 * Every catalog read and write, so the rest of the server never writes SQL.
 * better-sqlite3 is synchronous and the server is one process, so a transaction here is atomic with respect
 * to every other caller (used for "one active job per plan" and "a token is used once").
 */
export class Catalog {
  constructor(readonly db: CatalogDb) {}

  close(): void {
    this.db.$client.close();
  }

  // ── enrollment and agents ──────────────────────────────────────────────────
  addEnrollmentToken(row: { id: string; tokenHash: string; createdAt: number; expiresAt: number }): void {
    this.db.insert(enrollmentTokens).values(row).run();
  }

  /** Trades a one-time token for a new agent, atomically: a token is used at most once. */
  enroll(input: { tokenHash: string; agentId: string; name: string; labels: Record<string, string>; secretHash: string; now: number }): AgentRow {
    return this.db.transaction((tx) => {
      const token = tx.select().from(enrollmentTokens).where(eq(enrollmentTokens.tokenHash, input.tokenHash)).get();
      if (!token) throw new LifeboatError('unauthorized', 'unknown enrollment token; create one with `lifeboat token create`');
      if (token.usedAt !== null) throw new LifeboatError('unauthorized', 'this enrollment token was already used; create a new one with `lifeboat token create`');
      if (token.expiresAt <= input.now) throw new LifeboatError('unauthorized', 'this enrollment token has expired; create a new one with `lifeboat token create`');
      const existing = tx.select().from(agents).where(eq(agents.name, input.name)).get();
      if (existing && existing.revokedAt === null) {
        throw new LifeboatError('conflict', `an agent named "${input.name}" is already enrolled; choose another --name, or revoke it first (lifeboat agents revoke ${input.name})`);
      }
      if (existing) tx.delete(agents).where(eq(agents.id, existing.id)).run();
      const row: AgentRow = {
        id: input.agentId,
        name: input.name,
        labels: input.labels,
        secretHash: input.secretHash,
        createdAt: input.now,
        lastSeenAt: null,
        revokedAt: null,
        hostname: null,
        version: null,
        tools: [],
      };
      tx.insert(agents).values(row).run();
      tx.update(enrollmentTokens).set({ usedAt: input.now, usedByAgentId: row.id }).where(eq(enrollmentTokens.id, token.id)).run();
      return row;
    });
  }

  agentById(id: string): AgentRow | undefined {
    return this.db.select().from(agents).where(eq(agents.id, id)).get();
  }

  agentByName(name: string): AgentRow | undefined {
    return this.db.select().from(agents).where(eq(agents.name, name)).get();
  }

  listAgents(): AgentRow[] {
    return this.db.select().from(agents).orderBy(asc(agents.name)).all();
  }

  revokeAgent(id: string, now: number): void {
    this.db.update(agents).set({ revokedAt: now }).where(eq(agents.id, id)).run();
  }

  recordHello(id: string, hello: { hostname: string; version: string; tools: AgentRow['tools'] }, now: number): void {
    this.db.update(agents).set({ ...hello, lastSeenAt: now }).where(eq(agents.id, id)).run();
  }

  touchAgent(id: string, now: number): void {
    this.db.update(agents).set({ lastSeenAt: now }).where(eq(agents.id, id)).run();
  }

  // ── plans ──────────────────────────────────────────────────────────────────
  applyPlans(list: PlanT[], now: number): { created: string[]; updated: string[]; unchanged: string[] } {
    return this.db.transaction((tx) => {
      const out = { created: [] as string[], updated: [] as string[], unchanged: [] as string[] };
      for (const plan of list) {
        const existing = tx.select().from(plans).where(eq(plans.id, plan.id)).get();
        if (!existing) {
          tx.insert(plans).values({ id: plan.id, agentName: plan.agent, body: plan, createdAt: now, updatedAt: now }).run();
          out.created.push(plan.id);
        } else if (JSON.stringify(existing.body) === JSON.stringify(plan)) {
          out.unchanged.push(plan.id);
        } else {
          tx.update(plans).set({ agentName: plan.agent, body: plan, updatedAt: now }).where(eq(plans.id, plan.id)).run();
          out.updated.push(plan.id);
        }
      }
      return out;
    });
  }

  private toPlanRow(row: typeof plans.$inferSelect): PlanRow {
    return { plan: Plan.parse(row.body), createdAt: row.createdAt, updatedAt: row.updatedAt };
  }

  listPlans(): PlanRow[] {
    return this.db.select().from(plans).orderBy(asc(plans.id)).all().map((r) => this.toPlanRow(r));
  }

  plan(id: string): PlanRow | undefined {
    const row = this.db.select().from(plans).where(eq(plans.id, id)).get();
    return row ? this.toPlanRow(row) : undefined;
  }

  plansForAgent(name: string): PlanT[] {
    return this.db.select().from(plans).where(eq(plans.agentName, name)).orderBy(asc(plans.id)).all().map((r) => this.toPlanRow(r).plan);
  }

  deletePlan(id: string): boolean {
    return this.db.delete(plans).where(eq(plans.id, id)).run().changes > 0;
  }

  // ── jobs ───────────────────────────────────────────────────────────────────
  /** Inserts a backup job unless the plan already has one queued, dispatched or running (then returns that one). */
  createBackupJobUnlessActive(row: { id: string; planId: string; agentId: string; trigger: string; now: number }): { job: JobRow; created: boolean } {
    return this.db.transaction((tx) => {
      const active = tx
        .select()
        .from(jobs)
        .where(and(eq(jobs.planId, row.planId), inArray(jobs.status, ACTIVE_JOB_STATUSES)))
        .get();
      if (active) return { job: active, created: false };
      const job = this.newJobRow({ id: row.id, kind: 'backup', planId: row.planId, agentId: row.agentId, trigger: row.trigger, params: null, createdAt: row.now });
      tx.insert(jobs).values(job).run();
      return { job, created: true };
    });
  }

  createRestoreJob(row: { id: string; agentId: string; params: unknown; now: number }): JobRow {
    return this.createJob({ ...row, kind: 'restore', planId: null, trigger: 'manual' });
  }

  createJob(row: { id: string; kind: JobRow['kind']; planId: string | null; agentId: string; trigger: string; params: unknown; now: number }): JobRow {
    const job = this.newJobRow({ id: row.id, kind: row.kind, planId: row.planId, agentId: row.agentId, trigger: row.trigger, params: row.params, createdAt: row.now });
    this.db.insert(jobs).values(job).run();
    return job;
  }

  private newJobRow(base: Pick<JobRow, 'id' | 'kind' | 'planId' | 'agentId' | 'trigger' | 'params' | 'createdAt'>): JobRow {
    return {
      ...base,
      status: 'queued',
      dispatchedAt: null,
      startedAt: null,
      finishedAt: null,
      errorCode: null,
      errorMessage: null,
      warnings: [],
      progress: null,
      snapshotId: null,
      summary: null,
    };
  }

  job(id: string): JobRow | undefined {
    return this.db.select().from(jobs).where(eq(jobs.id, id)).get();
  }

  listJobs(filter: { planId?: string; agentId?: string; status?: JobStatus; limit?: number } = {}): JobRow[] {
    const where: SQL[] = [];
    if (filter.planId) where.push(eq(jobs.planId, filter.planId));
    if (filter.agentId) where.push(eq(jobs.agentId, filter.agentId));
    if (filter.status) where.push(eq(jobs.status, filter.status));
    return this.db
      .select()
      .from(jobs)
      .where(where.length ? and(...where) : undefined)
      .orderBy(desc(jobs.createdAt), desc(jobs.id))
      .limit(filter.limit ?? 50)
      .all();
  }

  jobsForAgent(agentId: string, statuses: JobStatus[]): JobRow[] {
    return this.db.select().from(jobs).where(and(eq(jobs.agentId, agentId), inArray(jobs.status, statuses))).orderBy(asc(jobs.createdAt)).all();
  }

  jobsWithStatus(statuses: JobStatus[]): JobRow[] {
    return this.db.select().from(jobs).where(inArray(jobs.status, statuses)).orderBy(asc(jobs.createdAt)).all();
  }

  /** Moves a job on only if it is still in one of `from`; false when another path got there first. */
  transitionJob(id: string, from: JobStatus[], patch: Partial<JobRow> & { status: JobStatus }): boolean {
    return this.db.update(jobs).set(patch).where(and(eq(jobs.id, id), inArray(jobs.status, from))).run().changes > 0;
  }

  updateJob(id: string, patch: Partial<Pick<JobRow, 'progress' | 'warnings'>>): void {
    this.db.update(jobs).set(patch).where(eq(jobs.id, id)).run();
  }

  // ── snapshots ──────────────────────────────────────────────────────────────
  /**
   * The last write of a successful backup: snapshot, artifacts, chunk lists and the job's success in one
   * transaction, so the catalog never shows a half-recorded snapshot. Fails if the job is no longer running.
   */
  recordSnapshot(snap: NewSnapshot, finishedAt: number, summary: string): void {
    this.db.transaction((tx) => {
      const moved = tx
        .update(jobs)
        .set({ status: 'succeeded', finishedAt, snapshotId: snap.id, summary })
        .where(and(eq(jobs.id, snap.jobId), eq(jobs.status, 'running')))
        .run();
      if (moved.changes === 0) throw new LifeboatError('conflict', `job ${snap.jobId} is no longer running; its snapshot was not recorded`);
      this.insertSnapshot(tx, snap);
    });
  }

  /** A snapshot read back from its manifest in the store (rebuild-catalog): no job to move on. */
  importSnapshot(snap: NewSnapshot): void {
    this.db.transaction((tx) => this.insertSnapshot(tx, snap));
  }

  private insertSnapshot(tx: Tx, snap: NewSnapshot): void {
    const size = snap.artifacts.reduce((n, a) => n + a.size, 0);
    tx.insert(snapshots).values({ id: snap.id, planId: snap.planId, agentId: snap.agentId, jobId: snap.jobId, status: 'complete', createdAt: snap.createdAt, startedAt: snap.startedAt, size }).run();
    const numbers = new Map<string, number>();
    for (const a of snap.artifacts) {
      const list = (tx.select({ last: sql<number | null>`max(${artifacts.chunkList})` }).from(artifacts).get()?.last ?? 0) + 1;
      tx.insert(artifacts)
        .values({ id: a.id, snapshotId: snap.id, step: a.step, kind: a.kind, name: a.name, size: a.size, sha256: a.sha256, chunkCount: a.chunks.length, metadata: a.metadata, chunkList: list })
        .run();
      // Batches keep each INSERT well under SQLite's bound-parameter limit.
      for (let i = 0; i < a.chunks.length; i += 200) {
        const batch = a.chunks.slice(i, i + 200).map((c, j) => ({ list, seq: i + j, chunk: this.chunkNumber(c.id, numbers), size: c.size, sliceOffset: c.offset ?? null, sliceLength: c.length ?? null }));
        tx.insert(artifactChunks).values(batch).run();
      }
    }
  }

  /** The number a chunk id has in the chunk lists (schema.ts chunkNumbers), given one if it has none yet. */
  private chunkNumber(id: string, known: Map<string, number>): number {
    let num = known.get(id);
    if (num === undefined) {
      this.numberOf ??= this.db.$client.prepare<[Buffer], { num: number }>('SELECT num FROM chunk_numbers WHERE id = ?');
      this.addNumber ??= this.db.$client.prepare<[Buffer]>('INSERT INTO chunk_numbers (id) VALUES (?)');
      const bytes = hexIdBytes(id);
      num = this.numberOf.get(bytes)?.num ?? Number(this.addNumber.run(bytes).lastInsertRowid);
      known.set(id, num);
    }
    return num;
  }
  private numberOf: Statement<[Buffer], { num: number }> | undefined;
  private addNumber: Statement<[Buffer]> | undefined;

  snapshot(id: string): SnapshotRow | undefined {
    return this.db.select().from(snapshots).where(eq(snapshots.id, id)).get();
  }

  listSnapshots(filter: { planId?: string; agentId?: string; limit?: number } = {}): SnapshotRow[] {
    const where: SQL[] = [];
    if (filter.planId) where.push(eq(snapshots.planId, filter.planId));
    if (filter.agentId) where.push(eq(snapshots.agentId, filter.agentId));
    return this.db
      .select()
      .from(snapshots)
      .where(where.length ? and(...where) : undefined)
      .orderBy(desc(snapshots.createdAt), desc(snapshots.id))
      .limit(filter.limit ?? 1000)
      .all();
  }

  artifactsOf(snapshotId: string): ArtifactRow[] {
    const { chunkList: _list, ...columns } = getTableColumns(artifacts);
    return this.db.select(columns).from(artifacts).where(eq(artifacts.snapshotId, snapshotId)).orderBy(asc(artifacts.step)).all();
  }

  /** An artifact's chunk list, in order; a slice keeps its offset and length (protocol.ts ChunkUse). */
  chunksOf(artifactId: string): ChunkUse[] {
    return this.db
      .select({ id: chunkNumbers.id, size: artifactChunks.size, offset: artifactChunks.sliceOffset, length: artifactChunks.sliceLength })
      .from(artifacts)
      .innerJoin(artifactChunks, eq(artifactChunks.list, artifacts.chunkList))
      .innerJoin(chunkNumbers, eq(chunkNumbers.num, artifactChunks.chunk))
      .where(eq(artifacts.id, artifactId))
      .orderBy(asc(artifactChunks.seq))
      .all()
      .map((c) => (c.offset === null ? { id: c.id, size: c.size } : { id: c.id, size: c.size, offset: c.offset, length: c.length! }));
  }

  countSnapshots(planId?: string): number {
    return this.db.select({ n: count() }).from(snapshots).where(planId === undefined ? undefined : eq(snapshots.planId, planId)).get()?.n ?? 0;
  }

  // ── chunks and storage ─────────────────────────────────────────────────────
  /**
   * A pack just made durable, with its chunks, in one transaction. A chunk already indexed elsewhere keeps its
   * first location (this pack's copy is garbage), unless `move` says this pack replaces the old one (repacking).
   */
  recordPack(index: PackIndex, createdAt: number, move = false): void {
    this.db.transaction((tx) => {
      tx.insert(packs).values({ id: index.pack, size: index.size, chunkCount: index.chunks.length, createdAt }).onConflictDoNothing().run();
      for (let i = 0; i < index.chunks.length; i += 200) {
        const rows = index.chunks
          .slice(i, i + 200)
          .map(([id, packOffset, storedSize, plainSize]) => ({ id, packId: index.pack, packOffset, storedSize, plainSize, createdAt, lastUsedAt: createdAt }));
        const insert = tx.insert(chunks).values(rows);
        if (move) insert.onConflictDoUpdate({ target: chunks.id, set: { packId: sql`excluded.pack_id`, packOffset: sql`excluded.pack_offset`, storedSize: sql`excluded.stored_size` } }).run();
        else insert.onConflictDoNothing().run();
      }
    });
  }

  /** Where the store holds a chunk; undefined when it does not (the hot path of every offer and restore). */
  chunkLocation(id: string): { pack: string; offset: number; length: number } | undefined {
    this.locate ??= this.db.$client.prepare<[Buffer], { pack: Buffer; offset: number; length: number }>('SELECT pack_id AS pack, pack_offset AS offset, stored_size AS length FROM chunks WHERE id = ?');
    const at = this.locate.get(hexIdBytes(id));
    return at && { pack: hexIdOf(at.pack), offset: at.offset, length: at.length };
  }
  private locate: Statement<[Buffer], { pack: Buffer; offset: number; length: number }> | undefined;

  hasPack(packId: string): boolean {
    return this.db.select({ id: packs.id }).from(packs).where(eq(packs.id, packId)).get() !== undefined;
  }

  listPacks(): PackRow[] {
    return this.db.select().from(packs).all();
  }

  /**
   * A pack's chunk rows, each with whether some artifact references it now: garbage collection's mark, one pack
   * at a time (the chunk index answers each), so a collection never holds the ids of a whole store.
   */
  chunksInPackMarked(packId: string): (ChunkRow & { referenced: boolean })[] {
    return this.db
      .select({ ...getTableColumns(chunks), referenced: sql<number>`exists (select 1 from chunk_numbers n join artifact_chunks ac on ac.chunk = n.num where n.id = chunks.id)` })
      .from(chunks)
      .where(eq(chunks.packId, packId))
      .orderBy(asc(chunks.packOffset))
      .all()
      .map((row) => ({ ...row, referenced: row.referenced === 1 }));
  }

  /** A pack gone from the store: its row, and the rows of chunks still indexed there. */
  deletePack(packId: string): void {
    this.db.transaction((tx) => {
      tx.delete(chunks).where(eq(chunks.packId, packId)).run();
      tx.delete(packs).where(eq(packs.id, packId)).run();
    });
  }

  /**
   * Per plan and in total. A chunk shared by several plans counts once in each of them and once in the total,
   * so the plans' bytes stored can add up to more than the total.
   */
  storeStats(): { plans: (StoreFigures & { planId: string })[]; total: StoreFigures } {
    const perPlan = this.db
      .select({ planId: snapshots.planId, snapshots: count(), bytesIn: sql<number>`coalesce(sum(${snapshots.size}), 0)` })
      .from(snapshots)
      .groupBy(snapshots.planId)
      .all();
    // A chunk's id fixes its plaintext, so (id, size) pairs are as distinct as ids.
    const planRefs = this.db
      .selectDistinct({ planId: snapshots.planId, chunkId: chunkNumbers.id, plainSize: artifactChunks.size })
      .from(artifactChunks)
      .innerJoin(chunkNumbers, eq(chunkNumbers.num, artifactChunks.chunk))
      .innerJoin(artifacts, eq(artifacts.chunkList, artifactChunks.list))
      .innerJoin(snapshots, eq(snapshots.id, artifacts.snapshotId))
      .as('plan_refs');
    const storedPerPlan = this.db
      .select({ planId: planRefs.planId, ...storedFigures(planRefs) })
      .from(planRefs)
      .leftJoin(chunks, eq(chunks.id, planRefs.chunkId))
      .groupBy(planRefs.planId)
      .all();
    const allRefs = this.db
      .selectDistinct({ chunkId: chunkNumbers.id, plainSize: artifactChunks.size })
      .from(artifactChunks)
      .innerJoin(chunkNumbers, eq(chunkNumbers.num, artifactChunks.chunk))
      .as('all_refs');
    const storedTotal = this.db.select(storedFigures(allRefs)).from(allRefs).leftJoin(chunks, eq(chunks.id, allRefs.chunkId)).get();

    const counted = new Map(perPlan.map((r) => [r.planId, r]));
    const stored = new Map(storedPerPlan.map((r) => [r.planId, r]));
    // Plans without snapshots are listed too (with zeros); so are deleted plans whose snapshots remain.
    const planIds = new Set([...counted.keys(), ...this.db.select({ id: plans.id }).from(plans).all().map((r) => r.id)]);
    const figures = [...planIds].sort().map((planId) => {
      const row = counted.get(planId);
      const s = stored.get(planId);
      return {
        planId,
        snapshots: row?.snapshots ?? 0,
        bytesIn: Number(row?.bytesIn ?? 0),
        uniqueChunks: Number(s?.uniqueChunks ?? 0),
        bytesStored: Number(s?.bytesStored ?? 0),
        chunksWithoutStoredSize: Number(s?.chunksWithoutStoredSize ?? 0),
      };
    });
    const total: StoreFigures = {
      snapshots: figures.reduce((n, p) => n + p.snapshots, 0),
      bytesIn: figures.reduce((n, p) => n + p.bytesIn, 0),
      uniqueChunks: Number(storedTotal?.uniqueChunks ?? 0),
      bytesStored: Number(storedTotal?.bytesStored ?? 0),
      chunksWithoutStoredSize: Number(storedTotal?.chunksWithoutStoredSize ?? 0),
    };
    return { plans: figures, total };
  }

  // ── drills ─────────────────────────────────────────────────────────────────
  createDrill(row: DrillRow): void {
    this.db.insert(drills).values(row).run();
  }

  updateDrill(id: string, patch: Partial<DrillRow>): void {
    this.db.update(drills).set(patch).where(eq(drills.id, id)).run();
  }

  drill(id: string): DrillRow | undefined {
    return this.db.select().from(drills).where(eq(drills.id, id)).get();
  }

  drillByJob(jobId: string): DrillRow | undefined {
    return this.db.select().from(drills).where(eq(drills.jobId, jobId)).get();
  }

  listDrills(filter: { planId?: string; limit?: number } = {}): DrillRow[] {
    return this.db
      .select()
      .from(drills)
      .where(filter.planId ? eq(drills.planId, filter.planId) : undefined)
      .orderBy(desc(drills.createdAt), desc(drills.id))
      .limit(filter.limit ?? 100)
      .all();
  }

  /** Snapshots of a plan that passed a drill (for retention: the newest of them is always kept). */
  drillVerifiedSnapshots(planId: string): Set<string> {
    const rows = this.db.select({ id: drills.snapshotId }).from(drills).where(and(eq(drills.planId, planId), eq(drills.status, 'passed'))).all();
    return new Set(rows.map((r) => r.id));
  }

  // ── pruning, garbage collection, verification ──────────────────────────────
  markDamaged(snapshotIds: string[], reason: string): void {
    if (snapshotIds.length === 0) return;
    this.db.update(snapshots).set({ status: 'damaged', damagedReason: reason.slice(0, 4000) }).where(inArray(snapshots.id, snapshotIds)).run();
  }

  /**
   * Removes a snapshot's rows (artifacts and chunk lists go with it) and stamps its chunks as just used, so
   * garbage collection leaves them alone for its grace period. The numbers of chunks no list uses any more go too.
   */
  deleteSnapshot(id: string, now: number): void {
    this.db.transaction((tx) => {
      const used = tx
        .selectDistinct({ num: chunkNumbers.num, id: chunkNumbers.id })
        .from(artifacts)
        .innerJoin(artifactChunks, eq(artifactChunks.list, artifacts.chunkList))
        .innerJoin(chunkNumbers, eq(chunkNumbers.num, artifactChunks.chunk))
        .where(eq(artifacts.snapshotId, id))
        .all();
      for (let i = 0; i < used.length; i += 200) {
        tx.update(chunks).set({ lastUsedAt: now }).where(inArray(chunks.id, used.slice(i, i + 200).map((c) => c.id))).run();
      }
      tx.delete(snapshots).where(eq(snapshots.id, id)).run();
      const unused = sql`not exists (select 1 from artifact_chunks ac where ac.chunk = chunk_numbers.num)`;
      for (let i = 0; i < used.length; i += 200) {
        tx.delete(chunkNumbers).where(and(inArray(chunkNumbers.num, used.slice(i, i + 200).map((c) => c.num)), unused)).run();
      }
    });
  }

  /**
   * The distinct chunks the snapshots (of one plan, or all) reference, in id order: the page after `afterId`, at
   * most `limit` of them. A page at a time, so a check of every chunk holds one page, whatever the store's size;
   * the chunk index keeps each page one ordered scan.
   */
  referencedChunksPage(options: { planId?: string; afterId: string; limit: number }): { id: string; size: number }[] {
    // Walks the chunk numbers in id order (their unique index) and takes those some list (of the plan) uses.
    const uses =
      options.planId === undefined
        ? sql`select max(ac.size) from artifact_chunks ac where ac.chunk = n.num`
        : sql`select max(ac.size) from artifact_chunks ac join artifacts a on a.chunk_list = ac.list join snapshots s on s.id = a.snapshot_id where ac.chunk = n.num and s.plan_id = ${options.planId}`;
    // Ids are blobs (schema.ts hexId), which order as their hex does; '' is before every id.
    const after = options.afterId === '' ? Buffer.alloc(0) : hexIdBytes(options.afterId);
    return this.db
      .all<{ id: Buffer; size: number }>(sql`select id, size from (select n.id as id, (${uses}) as size from chunk_numbers n where n.id > ${after}) where size is not null order by id limit ${options.limit}`)
      .map((r) => ({ id: hexIdOf(r.id), size: r.size }));
  }

  /** Snapshot ids whose artifacts reference any of these chunks. */
  snapshotsReferencing(chunkIds: string[]): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (let i = 0; i < chunkIds.length; i += 200) {
      const rows = this.db
        .selectDistinct({ chunk: chunkNumbers.id, snapshot: artifacts.snapshotId })
        .from(chunkNumbers)
        .innerJoin(artifactChunks, eq(artifactChunks.chunk, chunkNumbers.num))
        .innerJoin(artifacts, eq(artifacts.chunkList, artifactChunks.list))
        .where(inArray(chunkNumbers.id, chunkIds.slice(i, i + 200)))
        .all();
      for (const r of rows) out.set(r.chunk, [...(out.get(r.chunk) ?? []), r.snapshot]);
    }
    return out;
  }

  chunkRow(id: string): ChunkRow | undefined {
    return this.db.select().from(chunks).where(eq(chunks.id, id)).get();
  }

  deleteChunkRows(ids: string[]): void {
    for (let i = 0; i < ids.length; i += 200) this.db.delete(chunks).where(inArray(chunks.id, ids.slice(i, i + 200))).run();
  }
}

/** Aggregates over distinct (chunk id, plain size) references left-joined with the chunks table. */
function storedFigures(refs: { plainSize: SQLWrapper }) {
  return {
    uniqueChunks: sql<number>`count(*)`,
    bytesStored: sql<number>`coalesce(sum(coalesce(${chunks.storedSize}, ${refs.plainSize})), 0)`,
    chunksWithoutStoredSize: sql<number>`coalesce(sum(${chunks.id} is null), 0)`,
  };
}

import {
  ArtifactKind,
  Cipher,
  readChunkHeader,
  ArtifactMetadata,
  buildSnapshotManifest,
  decodeFrame,
  encodeSnapshotManifest,
  describeError,
  chunkListDigest,
  encodeFrameHeader,
  FrameKind,
  GarbageMeter,
  LifeboatError,
  newId,
  parseDuration,
  snapshotManifestKey,
  UPLOAD_WINDOW,
  type AgentMessages,
  type ChunkUse,
  usedBytes,
  type ErrorCode,
  type Logger,
  type PayloadOf,
  type Plan,
  type RestoreRequest,
  type RestoreTarget,
  type ServerMessages,
  type WireError,
  freeNow,
  FRAME_HEADER_BYTES,
} from '@lifeboat/shared';
import type { Catalog, DrillRow, JobRow, NewArtifact } from './catalog/catalog.js';
import type { RepositoryEncryption } from './encryption.js';
import type { StoreBackend } from '@lifeboat/shared';
import { ChunkStore, type PackWriter } from './store/chunks.js';

/** What the job service needs from the WebSocket hub (and nothing more). */
export interface AgentLink {
  isOnline(agentId: string): boolean;
  send<K extends keyof typeof ServerMessages & string>(agentId: string, type: K, payload: PayloadOf<typeof ServerMessages, K>): boolean;
  sendBinary(agentId: string, header: Buffer, data: Buffer): boolean;
}

export type Clock = () => number;

interface Upload {
  uploadId: string;
  step: number;
  kind: NewArtifact['kind'];
  name: string;
  size: number;
  /** The artifact's chunks in order, as offered (an offered chunk the store lacks is in `wanted` until it arrives). */
  chunks: ChunkUse[];
  /** Chunks asked for and not yet received: how many times each is still expected, and its plaintext size. */
  wanted: Map<string, { count: number; size: number }>;
  /** Offers and frames are handled strictly in arrival order, one at a time. */
  chain: Promise<void>;
  /** Packs the chunks that arrive; they are durable only once it is flushed, at the artifact's end. */
  writer: PackWriter;
  /** Offers not yet settled (answered "have", or uploaded and acknowledged). */
  pending: number;
  /** Uploaded chunks packed since the last chunks.ack: acknowledged together, once per turn of the event loop. */
  acks: string[];
  error: WireError | null;
}

/** A job that has been sent to its agent: what the server must remember until it ends. */
interface LiveJob {
  id: string;
  kind: JobRow['kind'];
  agentId: string;
  planId: string | null;
  plan: Plan | null;
  uploads: Map<string, Upload>;
  stored: Map<number, NewArtifact>;
  /** For restores: the only chunks this job may fetch, with their sizes (DESIGN §11: every job message is bound to its job). */
  allowedChunks: Map<string, number> | null;
  startedAt: number | null;
  warnings: string[];
  progressWrittenAt: number;
  /** Every chunk this job's uploads offered: garbage collection must not take them until the job ends. */
  chunkIds: Set<string>;
  /** Chunks a chunks.query found in the store: claimed in chunkIds, so an offer of one needs no second look. */
  confirmed: Set<string>;
}

const RESTORE_TIMEOUT_MS = 48 * 3_600_000;
const MAX_WARNINGS = 1000;
const PROGRESS_WRITE_INTERVAL_MS = 1000;
const MAX_ARTIFACTS = 1000;
/** Automatic retries of a backup whose connection was lost. */
const MAX_RETRIES = 3;
/** Chunk reads a restore's request has going at once (chunk.request). */
const CHUNK_READS_AT_ONCE = 4;

/** What a drill job was asked. */
interface DrillParams {
  drillId: string;
  snapshotId: string;
  planId: string;
}

/** What a restore job was asked, as kept in the catalog until it is dispatched. */
interface RestoreParams {
  snapshotId: string;
  targets: RestoreTarget[];
  artifacts: number[] | null;
  rewriteHosts: { from: string; to: string }[];
}

/**
 * The job lifecycle of DESIGN §4: queued → dispatched → running → succeeded | failed | cancelled, persisted in
 * the catalog. Also the receiving end of uploads and the sending end of restores, because both are bound to a job.
 */
export class JobService {
  private readonly live = new Map<string, LiveJob>();
  private readonly uploads = new Map<string, LiveJob>();
  /** The store's chunks, and the packs being written (garbage collection shares both). */
  readonly store: ChunkStore;
  private readonly garbage = new GarbageMeter(8 * 1024 * 1024);
  /** Chunk claims of backups whose snapshot is being recorded: no longer live, not yet referenced. */
  private readonly recording = new Set<Set<string>>();
  private link: AgentLink | null = null;

  constructor(
    private readonly catalog: Catalog,
    private readonly backend: StoreBackend,
    private readonly encryption: RepositoryEncryption,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    this.store = new ChunkStore(backend, catalog, clock);
  }

  attach(link: AgentLink): void {
    this.link = link;
  }

  /** After a restart nothing is in flight any more: no job may stay dispatched or running. */
  recoverAfterRestart(): void {
    for (const job of this.catalog.jobsWithStatus(['dispatched', 'running'])) {
      this.catalog.transitionJob(job.id, ['dispatched', 'running'], {
        status: 'failed',
        finishedAt: this.clock(),
        errorCode: 'server_restarted',
        errorMessage: 'the server restarted while this job was in progress; nothing was recorded — run it again',
      });
      this.log.warn('job interrupted by a server restart', { job: job.id });
    }
  }

  // ── creating jobs ──────────────────────────────────────────────────────────
  requestBackup(planId: string, trigger: 'manual' | 'schedule' | `retry ${number}`): { job: JobRow; created: boolean } {
    const row = this.catalog.plan(planId);
    if (!row) throw new LifeboatError('not_found', `no plan "${planId}"; see \`lifeboat plan list\``);
    this.encryption.requireChoice();
    const agent = this.catalog.agentByName(row.plan.agent);
    if (!agent || agent.revokedAt !== null) {
      throw new LifeboatError('unknown_agent', `plan "${planId}" runs on agent "${row.plan.agent}", which is not enrolled${agent ? ' (it was revoked)' : ''}`);
    }
    const result = this.catalog.createBackupJobUnlessActive({ id: newId('job'), planId, agentId: agent.id, trigger, now: this.clock() });
    if (result.created) {
      this.log.info('backup queued', { job: result.job.id, plan: planId, trigger });
      this.dispatch(agent.id);
    }
    return { job: this.catalog.job(result.job.id)!, created: result.created };
  }

  requestRestore(input: RestoreRequest): JobRow {
    const snapshot = this.catalog.snapshot(input.snapshotId);
    if (!snapshot) throw new LifeboatError('not_found', `no snapshot "${input.snapshotId}"; see \`lifeboat snapshots list\``);
    const agent = this.catalog.agentByName(input.agent);
    if (!agent || agent.revokedAt !== null) throw new LifeboatError('unknown_agent', `no enrolled agent named "${input.agent}"; see \`lifeboat agents list\``);
    const steps = this.catalog.artifactsOf(snapshot.id).map((a) => a.step);
    const unknown = (input.artifacts ?? []).filter((n) => !steps.includes(n));
    if (unknown.length) throw new LifeboatError('bad_request', `snapshot ${snapshot.id} has no artifact ${unknown.join(', ')} (it has ${steps.join(', ')})`);
    const targets: RestoreTarget[] = [
      ...(input.to ? [{ kind: 'dir' as const, path: input.to, force: input.force }] : []),
      ...(input.toPostgres ? [{ kind: 'postgres' as const, ...input.toPostgres, force: input.force || input.toPostgres.force }] : []),
      ...(input.toMysql ? [{ kind: 'mysql' as const, ...input.toMysql, force: input.force || input.toMysql.force }] : []),
    ];
    const params: RestoreParams = { snapshotId: snapshot.id, targets, artifacts: input.artifacts ?? null, rewriteHosts: input.rewriteHosts };
    const job = this.catalog.createRestoreJob({ id: newId('job'), agentId: agent.id, params, now: this.clock() });
    this.log.info('restore queued', { job: job.id, snapshot: snapshot.id, agent: agent.name, targets: targets.map((t) => t.kind).join(',') });
    this.dispatch(agent.id);
    return this.catalog.job(job.id)!;
  }

  // ── dispatch ───────────────────────────────────────────────────────────────
  /** Sends every queued job of an agent that is online; called on connect and whenever a job is queued. */
  dispatch(agentId: string): void {
    if (!this.link?.isOnline(agentId)) return;
    for (const job of this.catalog.jobsForAgent(agentId, ['queued'])) {
      try {
        if (job.kind === 'backup') this.dispatchBackup(job);
        else if (job.kind === 'drill') this.dispatchDrill(job);
        else this.dispatchRestore(job);
      } catch (err) {
        const { code, message } = describeError(err);
        this.finish(job.id, ['queued', 'dispatched'], { status: 'failed', errorCode: code, errorMessage: message });
      }
    }
  }

  private dispatchBackup(job: JobRow): void {
    const row = job.planId ? this.catalog.plan(job.planId) : undefined;
    if (!row) {
      this.finish(job.id, ['queued'], { status: 'cancelled', errorCode: 'cancelled', errorMessage: 'the plan was deleted before the job could start' });
      return;
    }
    if (this.expired(job, row.plan)) return;
    // Checked when the job was asked for, and again here: a job queued before this version (or before a store
    // lost its choice) must not back up in plaintext unasked. Fails the job with how to choose.
    this.encryption.requireChoice();
    if (!this.catalog.transitionJob(job.id, ['queued'], { status: 'dispatched', dispatchedAt: this.clock() })) return;
    this.live.set(job.id, this.newLive(job, row.plan, null));
    this.link!.send(job.agentId, 'job.backup', { jobId: job.id, plan: row.plan });
  }

  private dispatchRestore(job: JobRow): void {
    const params = job.params as RestoreParams;
    const { artifacts, allowed, snapshot } = this.artifactsForRestore(params.snapshotId, params.artifacts);
    const recipe = this.catalog.plan(snapshot.planId)?.plan.recipe?.name ?? null;
    if (!this.catalog.transitionJob(job.id, ['queued'], { status: 'dispatched', dispatchedAt: this.clock() })) return;
    this.live.set(job.id, this.newLive(job, null, allowed));
    this.link!.send(job.agentId, 'job.restore', {
      jobId: job.id,
      snapshotId: params.snapshotId,
      targets: params.targets,
      preserveOwner: true,
      artifacts,
      recipe,
      rewriteHosts: params.rewriteHosts,
    });
  }

  private dispatchDrill(job: JobRow): void {
    const params = job.params as DrillParams;
    const { artifacts, allowed } = this.artifactsForRestore(params.snapshotId, null);
    const checks = this.catalog.plan(params.planId)?.plan.drill?.checks ?? [];
    if (!this.catalog.transitionJob(job.id, ['queued'], { status: 'dispatched', dispatchedAt: this.clock() })) return;
    this.live.set(job.id, this.newLive(job, null, allowed));
    this.link!.send(job.agentId, 'job.drill', { jobId: job.id, drillId: params.drillId, planId: params.planId, snapshotId: params.snapshotId, artifacts, checks });
  }

  /** A snapshot's artifacts as a restore or a drill receives them, and the chunks (with sizes) it may fetch. */
  private artifactsForRestore(snapshotId: string, steps: number[] | null) {
    const snapshot = this.catalog.snapshot(snapshotId);
    const rows = this.catalog.artifactsOf(snapshotId).filter((a) => !steps || steps.includes(a.step));
    if (!snapshot || rows.length === 0) throw new LifeboatError('not_found', `snapshot ${snapshotId} no longer exists`);
    const allowed = new Map<string, number>();
    const artifacts = rows.map((a) => {
      const chunks = this.catalog.chunksOf(a.id);
      for (const c of chunks) allowed.set(c.id, c.size);
      return { artifactId: a.id, step: a.step, kind: ArtifactKind.parse(a.kind), name: a.name, size: a.size, sha256: a.sha256, metadata: ArtifactMetadata.parse(a.metadata), chunks };
    });
    return { snapshot, artifacts, allowed };
  }

  /**
   * A restore drill of a plan's snapshot (the newest complete one by default) on an agent its drill policy
   * selects (labels; role=drill by default) — never the snapshot's own source agent unless the plan allows it.
   */
  requestDrill(planId: string, options: { snapshotId?: string; trigger: string }): { drill: DrillRow; job: JobRow } {
    const row = this.catalog.plan(planId);
    if (!row) throw new LifeboatError('not_found', `no plan "${planId}"; see \`lifeboat plan list\``);
    const policy = row.plan.drill ?? { on: { labels: { role: 'drill' } }, allowSourceAgent: false, checks: [] };
    const snapshot = options.snapshotId
      ? this.catalog.snapshot(options.snapshotId)
      : this.catalog.listSnapshots({ planId, limit: 1_000 }).find((s) => s.status === 'complete');
    if (!snapshot || snapshot.planId !== planId) {
      throw new LifeboatError('not_found', options.snapshotId ? `plan ${planId} has no snapshot ${options.snapshotId}` : `plan ${planId} has no complete snapshot to drill yet`);
    }
    const wanted = Object.entries(policy.on.labels);
    const candidates = this.catalog
      .listAgents()
      .filter((a) => a.revokedAt === null && wanted.every(([k, v]) => a.labels[k] === v) && (policy.allowSourceAgent || a.id !== snapshot.agentId));
    const selector = wanted.map(([k, v]) => `${k}=${v}`).join(',') || '(any)';
    if (candidates.length === 0) {
      throw new LifeboatError('unknown_agent', `no enrolled agent matches ${selector} for plan ${planId}'s drills${policy.allowSourceAgent ? '' : ' (the snapshot\'s own agent is never used)'}; enroll one with --label ${wanted.map(([k, v]) => `${k}=${v}`).join(' --label ') || 'role=drill'}`);
    }
    const agent = candidates.find((a) => this.link?.isOnline(a.id)) ?? candidates[0]!;
    const now = this.clock();
    const drill: DrillRow = { id: newId('drl'), planId, snapshotId: snapshot.id, agentId: agent.id, jobId: null, status: 'queued', trigger: options.trigger, createdAt: now, startedAt: null, finishedAt: null, restoreMs: null, bytesRestored: null, checks: [], error: null };
    const job = this.catalog.createJob({ id: newId('job'), kind: 'drill', planId, agentId: agent.id, trigger: options.trigger, params: { drillId: drill.id, snapshotId: snapshot.id, planId } satisfies DrillParams, now });
    drill.jobId = job.id;
    this.catalog.createDrill(drill);
    this.log.info('drill queued', { drill: drill.id, plan: planId, snapshot: snapshot.id, agent: agent.name });
    this.dispatch(agent.id);
    return { drill: this.catalog.drill(drill.id)!, job: this.catalog.job(job.id)! };
  }

  private newLive(job: JobRow, plan: Plan | null, allowedChunks: Map<string, number> | null): LiveJob {
    return { id: job.id, kind: job.kind, agentId: job.agentId, planId: job.planId, plan, uploads: new Map(), stored: new Map(), allowedChunks, startedAt: null, warnings: [], progressWrittenAt: -Infinity, chunkIds: new Set(), confirmed: new Set() };
  }

  /** A run that could not start within the plan's window is dropped rather than run late. */
  private expired(job: JobRow, plan: Plan): boolean {
    const windowMs = parseDuration(plan.window) ?? Infinity;
    if (this.clock() - job.createdAt <= windowMs) return false;
    this.finish(job.id, ['queued'], {
      status: 'cancelled',
      errorCode: 'agent_offline',
      errorMessage: `agent ${plan.agent} was not connected within the plan's window (${plan.window}); this run was skipped`,
    });
    return true;
  }

  // ── messages from agents ───────────────────────────────────────────────────
  /** Every job message must name a job that is live and belongs to the sender; anything else is refused. */
  private requireLive(agentId: string, jobId: string): LiveJob {
    const live = this.live.get(jobId);
    if (!live || live.agentId !== agentId) {
      throw new LifeboatError('protocol', `job ${jobId} is not a job in progress on this agent (finished, unknown, or another agent's)`);
    }
    return live;
  }

  onStarted(agentId: string, p: PayloadOf<typeof AgentMessages, 'job.started'>): void {
    const live = this.requireLive(agentId, p.jobId);
    live.startedAt = this.clock();
    this.catalog.transitionJob(p.jobId, ['dispatched'], { status: 'running', startedAt: live.startedAt });
    if (live.kind === 'drill') {
      const drill = this.catalog.drillByJob(p.jobId);
      if (drill) this.catalog.updateDrill(drill.id, { status: 'running', startedAt: live.startedAt });
    }
  }

  onProgress(agentId: string, p: PayloadOf<typeof AgentMessages, 'job.progress'>): void {
    const live = this.requireLive(agentId, p.jobId);
    // Throttled by real elapsed time (the injected clock is for what gets recorded, and may stand still in tests).
    const elapsed = performance.now();
    if (elapsed - live.progressWrittenAt < PROGRESS_WRITE_INTERVAL_MS) return;
    live.progressWrittenAt = elapsed;
    const now = this.clock();
    const progress = { phase: p.phase, bytes: p.bytes, at: new Date(now).toISOString(), ...(p.totalBytes !== undefined ? { totalBytes: p.totalBytes } : {}) };
    this.catalog.updateJob(p.jobId, { progress });
  }

  onWarning(agentId: string, p: PayloadOf<typeof AgentMessages, 'job.warning'>): void {
    const live = this.requireLive(agentId, p.jobId);
    if (live.warnings.length >= MAX_WARNINGS) return;
    live.warnings.push(live.warnings.length === MAX_WARNINGS - 1 ? 'further warnings omitted' : p.message);
    this.catalog.updateJob(p.jobId, { warnings: live.warnings });
  }

  onArtifactBegin(agentId: string, p: PayloadOf<typeof AgentMessages, 'artifact.begin'>): void {
    const live = this.requireLive(agentId, p.jobId);
    if (live.kind !== 'backup' || !live.plan) throw new LifeboatError('protocol', `job ${p.jobId} is not a backup`);
    if (live.startedAt === null) throw new LifeboatError('protocol', `job ${p.jobId} has not started`);
    if (p.step >= MAX_ARTIFACTS) throw new LifeboatError('protocol', `a backup has at most ${MAX_ARTIFACTS} artifacts`);
    if (live.stored.has(p.step)) throw new LifeboatError('protocol', `artifact ${p.step} of job ${p.jobId} was already stored`);
    if (this.uploads.has(p.uploadId)) throw new LifeboatError('protocol', `upload ${p.uploadId} already exists`);
    const encryption = this.encryption.current;
    if (encryption && p.keyCheck !== encryption.keyCheck) {
      // Refused before any data moves: chunks under another key would be unreadable to every restore.
      const error = { code: 'forbidden' as const, message: p.keyCheck ? "the agent's passphrase does not match this repository's (key check differs); nothing was stored" : 'this repository is encrypted; the agent has no passphrase (passphraseFile in its config)' };
      this.link?.send(agentId, 'upload.failed', { jobId: p.jobId, uploadId: p.uploadId, error });
      return;
    }
    const upload: Upload = { uploadId: p.uploadId, step: p.step, kind: p.kind, name: p.name, size: 0, chunks: [], wanted: new Map(), chain: Promise.resolve(), writer: this.store.writer(), pending: 0, acks: [], error: null };
    live.uploads.set(p.uploadId, upload);
    this.uploads.set(p.uploadId, live);
  }

  private uploadOf(agentId: string, uploadId: string): { live: LiveJob; upload: Upload } {
    const live = this.uploads.get(uploadId);
    const upload = live?.uploads.get(uploadId);
    if (!live || !upload || live.agentId !== agentId) throw new LifeboatError('protocol', `no upload ${uploadId} in progress on this agent`);
    return { live, upload };
  }

  /** The next chunks of an artifact: part of it from now on; the agent sends only those the store lacks. */
  onChunksOffer(agentId: string, p: PayloadOf<typeof AgentMessages, 'chunks.offer'>): void {
    const { live, upload } = this.uploadOf(agentId, p.uploadId);
    // The agent keeps at most UPLOAD_WINDOW offers unsettled; more means it ignores flow control.
    upload.pending += p.chunks.length;
    if (upload.pending > UPLOAD_WINDOW) throw new LifeboatError('protocol', `upload ${p.uploadId} exceeded the flow-control window`);
    for (const chunk of p.chunks) {
      upload.chunks.push(chunk);
      upload.size += chunk.size;
      live.chunkIds.add(chunk.id);
    }
    upload.chain = upload.chain.then(async () => {
      if (upload.error) return;
      try {
        const have: string[] = [];
        const want: string[] = [];
        for (const { id, size } of p.chunks) {
          if (!upload.wanted.has(id) && (live.confirmed.has(id) || upload.writer.holds(id) || this.store.has(id))) {
            have.push(id);
            continue;
          }
          const wanted = upload.wanted.get(id);
          if (wanted) wanted.count++;
          else upload.wanted.set(id, { count: 1, size });
          want.push(id);
        }
        upload.pending -= have.length;
        this.link?.send(agentId, 'chunks.answer', { uploadId: p.uploadId, have, want });
      } catch (err) {
        this.failUpload(live, upload, err);
      }
    });
  }

  /** Chunks of the artifact the agent reused unread: no question, no answer, as a chunks.query claimed them. */
  onChunksReused(agentId: string, p: PayloadOf<typeof AgentMessages, 'chunks.reused'>): void {
    const { live, upload } = this.uploadOf(agentId, p.uploadId);
    for (const chunk of p.chunks) {
      if (!live.confirmed.has(chunk.id)) {
        this.failUpload(live, upload, new LifeboatError('protocol', `chunk ${chunk.id.slice(0, 16)}… was sent as reused, but no chunks.query of job ${live.id} found it in the store`));
        return;
      }
      upload.chunks.push(chunk);
      upload.size += usedBytes(chunk);
    }
  }

  /** A binary frame: a chunk the server asked for (agent → server). */
  onFrame(agentId: string, buf: Buffer): void {
    const decoded = decodeFrame(buf);
    if (!decoded.ok) throw new LifeboatError('protocol', decoded.error);
    const { frame } = decoded;
    if (frame.kind !== FrameKind.Upload) throw new LifeboatError('protocol', 'agents send only upload frames');
    const { live, upload } = this.uploadOf(agentId, frame.transferId);
    const wanted = upload.wanted.get(frame.chunkId);
    if (!wanted) throw new LifeboatError('protocol', `chunk ${frame.chunkId} was not asked for in upload ${frame.transferId}`);
    if (--wanted.count === 0) upload.wanted.delete(frame.chunkId);
    const size = wanted.size;
    upload.chain = upload.chain.then(async () => {
      if (upload.error) return;
      if (this.encryption.current && readChunkHeader(frame.data).cipher !== Cipher.Aes256Gcm) {
        return this.failUpload(live, upload, new LifeboatError('integrity', 'this repository is encrypted; an unencrypted chunk was refused'));
      }
      try {
        try {
          upload.writer.add(frame.chunkId, frame.data, size);
        } finally {
          // Copied into the pack (or refused): the frame's memory is done with. Counted all the same: the socket's
          // reads it was gathered from (64 KiB each) are garbage now, and uncounted they pushed the peak to 150 MiB.
          freeNow(frame.data, FRAME_HEADER_BYTES);
          this.garbage.add(frame.data.length);
        }
        // Acknowledged once packed, not once durable: the artifact's end waits for that.
        await upload.writer.ready();
        if (upload.error) return;
        upload.pending--;
        this.acknowledge(agentId, upload, frame.chunkId);
      } catch (err) {
        this.failUpload(live, upload, err);
      }
    });
  }

  /** Chunks packed in one turn of the event loop go back in one chunks.ack. */
  private acknowledge(agentId: string, upload: Upload, chunkId: string): void {
    upload.acks.push(chunkId);
    if (upload.acks.length > 1) return;
    setImmediate(() => {
      const chunkIds = upload.acks;
      upload.acks = [];
      if (!upload.error) this.link?.send(agentId, 'chunks.ack', { uploadId: upload.uploadId, chunkIds });
    });
  }

  private failUpload(live: LiveJob, upload: Upload, err: unknown): void {
    if (upload.error) return;
    upload.error = describeError(err);
    upload.writer.discard();
    this.log.warn('upload failed', { job: live.id, upload: upload.uploadId, error: upload.error.message });
    this.link?.send(live.agentId, 'upload.failed', { jobId: live.id, uploadId: upload.uploadId, error: upload.error });
  }

  async onArtifactEnd(agentId: string, p: PayloadOf<typeof AgentMessages, 'artifact.end'>): Promise<void> {
    const live = this.requireLive(agentId, p.jobId);
    const upload = live.uploads.get(p.uploadId);
    if (!upload) throw new LifeboatError('protocol', `no upload ${p.uploadId} in job ${p.jobId}`);
    await upload.chain;
    // DESIGN §11: every chunk of the artifact durable before it counts as stored.
    if (!upload.error) await upload.writer.flush().catch((err: unknown) => this.failUpload(live, upload, err));
    live.uploads.delete(p.uploadId);
    this.uploads.delete(p.uploadId);
    if (upload.error) return; // upload.failed was sent already
    // The digest of the chunk list, as the agent computed it; checked here against the chunks as offered, and by
    // every restore.
    const sha256 = p.sha256;
    const problem =
      upload.wanted.size > 0 ? `${upload.wanted.size} chunk(s) the server asked for never arrived`
      : upload.size !== p.size ? `the chunks offered add up to ${upload.size} bytes, the agent sent ${p.size}`
      : upload.chunks.length !== p.chunks ? `the server received ${upload.chunks.length} chunks, the agent sent ${p.chunks}`
      : chunkListDigest(upload.chunks) !== sha256 ? 'the chunks offered do not match the digest of the chunk list the agent sent'
      : null;
    if (problem) {
      this.link?.send(agentId, 'upload.failed', { jobId: p.jobId, uploadId: p.uploadId, error: { code: 'integrity', message: `artifact ${upload.name}: ${problem}` } });
      return;
    }
    const artifactId = newId('art');
    live.stored.set(upload.step, { id: artifactId, step: upload.step, kind: upload.kind, name: upload.name, size: upload.size, sha256, metadata: p.metadata, chunks: upload.chunks });
    this.link?.send(agentId, 'artifact.stored', { jobId: p.jobId, uploadId: p.uploadId, artifactId });
  }

  onArtifactAbort(agentId: string, p: PayloadOf<typeof AgentMessages, 'artifact.abort'>): void {
    const live = this.requireLive(agentId, p.jobId);
    const upload = live.uploads.get(p.uploadId);
    if (upload) {
      upload.error = { code: 'source_failed', message: p.reason };
      this.keepReceived(live, upload);
    }
    live.uploads.delete(p.uploadId);
    this.uploads.delete(p.uploadId);
  }

  /**
   * An upload that will not complete still had its chunks verified: they are written, so that the next attempt
   * need not send them again (DESIGN §5, resumable). A store failure keeps nothing (the writer was discarded).
   */
  private keepReceived(live: LiveJob, upload: Upload): void {
    void upload.chain
      .then(() => upload.writer.flush())
      .catch((err: unknown) => this.log.warn('could not keep the chunks of an unfinished upload', { job: live.id, upload: upload.uploadId, error: describeError(err).message }));
  }

  /** Every upload of a job that ended (or lost its agent) before them. */
  private endUploads(live: LiveJob): void {
    for (const [id, upload] of live.uploads) {
      this.uploads.delete(id);
      this.keepReceived(live, upload);
    }
    live.uploads.clear();
  }

  /** A restore asks for chunks; each must belong to the snapshot being restored. */
  /** Which of these chunks the store lacks; the others are this job's from now on, safe from garbage collection. */
  async onChunksQuery(agentId: string, p: PayloadOf<typeof AgentMessages, 'chunks.query'>): Promise<void> {
    const live = this.requireLive(agentId, p.jobId);
    if (live.kind !== 'backup') throw new LifeboatError('protocol', `job ${p.jobId} is not a backup`);
    // Claimed and checked in one synchronous step: garbage collection drops a chunk from the index only if no
    // job claims it, so a chunk found here stays until the job ends.
    const absent: string[] = [];
    for (const id of p.chunkIds) {
      live.chunkIds.add(id);
      if (this.store.has(id)) live.confirmed.add(id);
      else absent.push(id);
    }
    this.link?.send(agentId, 'chunks.absent', { queryId: p.queryId, chunkIds: absent });
  }

  async onChunkRequest(agentId: string, p: PayloadOf<typeof AgentMessages, 'chunk.request'>): Promise<void> {
    const live = this.requireLive(agentId, p.jobId);
    if (!live.allowedChunks) throw new LifeboatError('protocol', `job ${p.jobId} is not a restore`);
    const allowed = live.allowedChunks;
    for (const chunkId of p.chunkIds) {
      if (!allowed.has(chunkId)) throw new LifeboatError('protocol', `chunk ${chunkId} is not part of the snapshot job ${p.jobId} restores`);
    }
    // A few reads at once, sent in the order asked: each read is several trips through the thread pool, and one
    // after the other they kept the agent waiting (the agent's window bounds what is read ahead).
    const reads: Promise<Buffer>[] = [];
    const readNext = () => {
      const chunkId = p.chunkIds[reads.length]!;
      const read = this.store.get(chunkId, allowed.get(chunkId) ?? null);
      read.catch(() => undefined);
      reads.push(read);
    };
    while (reads.length < Math.min(CHUNK_READS_AT_ONCE, p.chunkIds.length)) readNext();
    for (let i = 0; i < p.chunkIds.length; i++) {
      const chunkId = p.chunkIds[i]!;
      try {
        const data = await reads[i]!;
        this.garbage.add(data.length * 2);
        this.link?.sendBinary(agentId, encodeFrameHeader(FrameKind.Download, p.transferId, chunkId), data);
      } catch (err) {
        this.link?.send(agentId, 'chunk.missing', { jobId: p.jobId, transferId: p.transferId, chunkId, error: describeError(err) });
      } finally {
        if (reads.length < p.chunkIds.length) readNext();
      }
    }
  }

  async onFinished(agentId: string, p: PayloadOf<typeof AgentMessages, 'job.finished'>): Promise<void> {
    const live = this.requireLive(agentId, p.jobId);
    this.live.delete(p.jobId);
    this.endUploads(live);
    if (live.kind === 'drill' && p.drill) {
      const drill = this.catalog.drillByJob(p.jobId);
      if (drill) this.catalog.updateDrill(drill.id, { restoreMs: p.drill.restoreMs, bytesRestored: p.drill.bytesRestored, checks: p.drill.checks });
    }
    if (!p.ok) {
      const error = p.error ?? { code: 'internal' as const, message: 'the agent reported a failure without a reason' };
      this.finish(p.jobId, ['dispatched', 'running'], { status: 'failed', errorCode: error.code, errorMessage: error.message });
      this.log.warn('job failed', { job: p.jobId, code: error.code, error: error.message });
      return;
    }
    if (live.kind === 'restore' || live.kind === 'drill') {
      this.finish(p.jobId, ['running'], { status: 'succeeded', summary: p.summary ?? null });
      this.log.info(`${live.kind} succeeded`, { job: p.jobId });
      return;
    }
    this.recording.add(live.chunkIds);
    try {
      const snapshotId = await this.recordBackup(live, p.artifacts ?? live.plan?.steps?.length ?? live.stored.size, p.summary ?? null);
      this.log.info('backup succeeded', { job: p.jobId, snapshot: snapshotId });
    } catch (err) {
      const { code, message } = describeError(err);
      this.finish(p.jobId, ['dispatched', 'running'], { status: 'failed', errorCode: code, errorMessage: `recording the snapshot failed: ${message}` });
      this.log.error('recording a snapshot failed', { job: p.jobId, error: message });
    } finally {
      this.recording.delete(live.chunkIds);
    }
  }

  /**
   * Write order of DESIGN §11: chunks are durable already (an artifact counts as stored only once its packs
   * are sealed); then the manifest goes to the store; the catalog row is the very last write.
   */
  private async recordBackup(live: LiveJob, expected: number, summary: string | null): Promise<string> {
    const plan = live.plan!;
    const artifacts: NewArtifact[] = [];
    if (expected === 0) throw new LifeboatError('upload_failed', `the backup of plan ${plan.id} produced no artifact`);
    if (live.stored.size !== expected) throw new LifeboatError('upload_failed', `the agent reported ${expected} artifact(s) but the server stored ${live.stored.size}`);
    for (let step = 0; step < expected; step++) {
      const artifact = live.stored.get(step);
      if (!artifact) throw new LifeboatError('upload_failed', `artifact ${step + 1} of plan ${plan.id} never arrived complete`);
      artifacts.push(artifact);
    }
    const snapshotId = newId('snap');
    const createdAt = this.clock();
    const startedAt = live.startedAt ?? createdAt;
    const manifest = buildSnapshotManifest({ snapshotId, planId: plan.id, agentId: live.agentId, jobId: live.id, createdAt: new Date(createdAt).toISOString(), startedAt: new Date(startedAt).toISOString(), plan, artifacts });
    await this.backend.put(snapshotManifestKey(snapshotId), await encodeSnapshotManifest(manifest));
    try {
      this.catalog.recordSnapshot({ id: snapshotId, planId: plan.id, agentId: live.agentId, jobId: live.id, createdAt, startedAt, artifacts }, createdAt, summary ?? `${artifacts.length} artifact(s)`);
    } catch (err) {
      // Not recorded, so not a snapshot: rebuild-catalog must not bring it back from its manifest.
      await this.backend.delete(snapshotManifestKey(snapshotId)).catch(() => undefined);
      throw err;
    }
    return snapshotId;
  }

  // ── ending jobs ────────────────────────────────────────────────────────────
  private finish(jobId: string, from: JobRow['status'][], patch: Partial<JobRow> & { status: JobRow['status'] }): boolean {
    this.live.delete(jobId);
    const moved = this.catalog.transitionJob(jobId, from, { finishedAt: this.clock(), ...patch });
    if (moved) this.settleDrill(jobId, patch);
    return moved;
  }

  /** A drill ends with its job, however the job ends (the agent's report, a lost connection, a timeout). */
  private settleDrill(jobId: string, outcome: Partial<JobRow> & { status: JobRow['status'] }): void {
    const drill = this.catalog.drillByJob(jobId);
    if (!drill) return;
    const passed = outcome.status === 'succeeded';
    this.catalog.updateDrill(drill.id, { status: passed ? 'passed' : 'failed', finishedAt: this.clock(), error: passed ? null : (outcome.errorMessage ?? 'the drill did not complete') });
    if (passed) this.log.info('drill passed', { drill: drill.id, plan: drill.planId, snapshot: drill.snapshotId });
    // An event an alert can be hung on.
    else this.log.error('drill failed', { drill: drill.id, plan: drill.planId, snapshot: drill.snapshotId, error: outcome.errorMessage ?? undefined });
  }

  /** Fails a job in progress and tells its agent to stop. */
  fail(jobId: string, code: ErrorCode, message: string): void {
    const live = this.live.get(jobId);
    if (this.finish(jobId, ['queued', 'dispatched', 'running'], { status: code === 'cancelled' ? 'cancelled' : 'failed', errorCode: code, errorMessage: message })) {
      this.log.warn('job failed', { job: jobId, code, error: message });
    }
    if (live) {
      this.endUploads(live);
      this.link?.send(live.agentId, 'job.cancel', { jobId, reason: message });
    }
  }

  /** The agent's connection is gone: its running jobs failed; jobs it never started go back to the queue. */
  onDisconnected(agentId: string, agentName: string): void {
    for (const live of [...this.live.values()].filter((l) => l.agentId === agentId)) {
      this.live.delete(live.id);
      this.endUploads(live);
      if (live.startedAt === null && this.catalog.transitionJob(live.id, ['dispatched'], { status: 'queued', dispatchedAt: null })) continue;
      this.finish(live.id, ['dispatched', 'running'], {
        status: 'failed',
        errorCode: 'disconnected',
        errorMessage: `the connection to agent ${agentName} was lost during the job; nothing was recorded`,
      });
      this.log.warn('job failed: agent disconnected', { job: live.id, agent: agentName });
      if (live.kind === 'backup' && live.planId) this.retryLater(live.id, live.planId);
    }
  }

  /**
   * A backup cut off by a lost connection is queued again, a few times at most: it runs when the agent is back,
   * and sends only the chunks that never became durable.
   */
  private retryLater(failedJobId: string, planId: string): void {
    const failed = this.catalog.job(failedJobId);
    const attempt = failed?.trigger.startsWith('retry ') ? Number(failed.trigger.slice(6)) + 1 : 1;
    if (attempt > MAX_RETRIES) {
      this.log.warn('not retrying again', { plan: planId, attempts: attempt - 1 });
      return;
    }
    try {
      const { job, created } = this.requestBackup(planId, `retry ${attempt}`);
      if (created) this.log.info('backup will be retried when the agent is back', { plan: planId, job: job.id, attempt });
    } catch (err) {
      this.log.warn('could not queue a retry', { plan: planId, error: (err as Error).message });
    }
  }

  // ── garbage collection's view ──────────────────────────────────────────────
  /** Whether a job in progress relies on this chunk (offered it, stored it, or restores it). */
  isChunkInFlight(id: string): boolean {
    for (const live of this.live.values()) if (live.chunkIds.has(id) || live.allowedChunks?.has(id)) return true;
    for (const claimed of this.recording) if (claimed.has(id)) return true;
    return false;
  }

  /** Periodic: time out running jobs, drop queued runs whose window has passed. */
  tick(): void {
    const now = this.clock();
    for (const live of this.live.values()) {
      if (live.startedAt === null) continue;
      const limit = live.plan ? (parseDuration(live.plan.timeout) ?? Infinity) : RESTORE_TIMEOUT_MS;
      if (now - live.startedAt > limit) this.fail(live.id, 'timeout', `the job ran longer than its timeout (${live.plan?.timeout ?? '48h'}) and was stopped`);
    }
    for (const job of this.catalog.jobsWithStatus(['queued'])) {
      const row = job.kind === 'backup' && job.planId ? this.catalog.plan(job.planId) : undefined;
      if (row) this.expired(job, row.plan);
    }
  }
}

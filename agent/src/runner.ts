import { describeError, formatBytes, LifeboatError, zstdLevel, type AgentMessages, type FilesStepOptions, type Logger, type PayloadOf, type ServerMessage } from '@lifeboat/shared';
import { downloadArtifact } from './download.js';
import { runDrill, type DrillJob, type DrillSettings } from './drill/run-drill.js';
import type { Keyring } from './keyring.js';
import type { ServerLink } from './link.js';
import type { JobContext } from './sources/source.js';
import { artifactTasks, sourceFor, targetFor, type ArtifactTask } from './sources/registry.js';
import { afterRestore, expandRecipe } from './recipes/index.js';
import { uploadArtifact } from './upload.js';
import { absentChunks } from './chunk-query.js';
import path from 'node:path';

type BackupJob = Extract<ServerMessage, { type: 'job.backup' }>['payload'];
type RestoreJob = Extract<ServerMessage, { type: 'job.restore' }>['payload'];
/** What a job reports when it ends, but its id. */
type Finished = Omit<PayloadOf<typeof AgentMessages, 'job.finished'>, 'jobId'>;

/** Runs the jobs the server sends, each with its own abort signal, and reports every outcome as a value. */
export class JobRunner {
  private readonly running = new Map<string, AbortController>();

  constructor(
    private readonly link: ServerLink,
    private readonly keyring: Pick<Keyring, 'forJob'>,
    private readonly log: Logger,
    private readonly drillSettings: DrillSettings = {},
    /** Where the files caches of this agent's plans live; null keeps none (every file is read every time). */
    private readonly filesCacheDir: string | null = null,
  ) {}

  get activeJobs(): number {
    return this.running.size;
  }

  start(message: Extract<ServerMessage, { type: 'job.backup' | 'job.restore' | 'job.drill' }>): void {
    const jobId = message.payload.jobId;
    if (this.running.has(jobId)) {
      this.log.warn('ignored a job that is already running', { job: jobId });
      return;
    }
    const controller = new AbortController();
    this.running.set(jobId, controller);
    const ctx = this.context(jobId, controller.signal);
    this.link.send('job.started', { jobId });
    const work: Promise<Finished> =
      message.type === 'job.backup'
        ? this.backup(message.payload, ctx).then((outcome) => ({ ok: true, ...outcome }))
        : message.type === 'job.restore'
          ? this.restore(message.payload, ctx).then((outcome) => ({ ok: true, ...outcome }))
          : this.drill(message.payload, ctx);
    work
      .then((finished) => {
        if (controller.signal.aborted) return;
        if (finished.ok) this.log.info(`job ${jobId} succeeded: ${finished.summary ?? ''}`);
        else this.log.error(`job ${jobId} failed: ${finished.error?.message ?? finished.summary ?? ''}`, { code: finished.error?.code });
        this.link.send('job.finished', { jobId, ...finished });
      })
      .catch((err: unknown) => {
        const error = controller.signal.aborted && controller.signal.reason instanceof LifeboatError ? describeError(controller.signal.reason) : describeError(err);
        this.log.error(`job ${jobId} failed: ${error.message}`, { code: error.code });
        this.link.send('job.finished', { jobId, ok: false, error });
      })
      .finally(() => this.running.delete(jobId));
  }

  cancel(jobId: string, reason: string): void {
    this.running.get(jobId)?.abort(new LifeboatError('cancelled', reason));
  }

  /** The connection is gone: nothing in flight can complete, so stop everything now. */
  abortAll(reason: string): void {
    for (const controller of this.running.values()) controller.abort(new LifeboatError('disconnected', reason));
  }

  private context(jobId: string, signal: AbortSignal): JobContext {
    let lastProgress = 0;
    const log = this.log.child(jobId);
    return {
      jobId,
      signal,
      log,
      warn: (message) => {
        log.warn(message);
        this.link.send('job.warning', { jobId, message: message.slice(0, 4000) });
      },
      progress: (phase, bytes, totalBytes) => {
        const now = Date.now();
        if (now - lastProgress < 500) return;
        lastProgress = now;
        this.link.send('job.progress', { jobId, phase, bytes, ...(totalBytes !== undefined ? { totalBytes } : {}) });
      },
    };
  }

  private async backup(job: BackupJob, ctx: JobContext): Promise<{ summary: string; artifacts: number }> {
    const { plan } = job;
    // A missing or wrong passphrase fails the job here, before any source runs or any byte moves.
    const keys = this.keyring.forJob();
    // A recipe reads the application's own configuration here, on the agent, and becomes steps.
    const steps = plan.steps ?? (await expandRecipe(plan.recipe!, ctx));
    const tasks = steps.flatMap(artifactTasks);
    this.log.info(`backup of plan ${plan.id} started (job ${job.jobId}, ${tasks.length} artifact(s))`);
    let total = 0;
    let sent = 0;
    let sentChunks = 0;
    let chunks = 0;
    const notes: string[] = [];
    // In the plan's order: dumps before files, as the plan (or the recipe) says.
    for (const [index, task] of tasks.entries()) {
      const artifact = await (await sourceFor(task.kind)).backup(task.options as never, this.withFilesCache(ctx, plan.id, index, task, keys?.keyCheck ?? null));
      ctx.log.info(`artifact ${index + 1}/${tasks.length}: ${task.kind} ${artifact.name}`);
      const result = await uploadArtifact(this.link, index, artifact, ctx, { compressionLevel: zstdLevel(plan.compression), keys });
      total += result.size;
      sent += result.sentBytes;
      sentChunks += result.sentChunks;
      chunks += result.chunks;
      if (result.note) notes.push(result.note);
    }
    // The last figures say how much deduplication saved: only chunks the store lacked travelled.
    const summary = `${tasks.length} artifact(s), ${formatBytes(total)}; sent ${formatBytes(sent)} in ${sentChunks} new of ${chunks} chunks`;
    return { summary: [summary, ...notes].join('; '), artifacts: tasks.length };
  }

  /** A files step gets the files cache of its plan step: same paths, excludes and chunk id scheme, or none applies. */
  private withFilesCache(ctx: JobContext, planId: string, step: number, task: ArtifactTask, keyCheck: string | null): JobContext {
    if (!this.filesCacheDir || task.kind !== 'files') return ctx;
    const { paths, exclude } = task.options as FilesStepOptions;
    return {
      ...ctx,
      filesCache: {
        file: path.join(this.filesCacheDir, `${encodeURIComponent(planId)}.step${step}.jsonl`),
        identity: JSON.stringify({ paths, exclude: exclude ?? [], ids: keyCheck ?? 'sha256' }),
        absent: (ids) => absentChunks(this.link, ctx.jobId, ids, ctx.signal),
        log: ctx.log,
      },
    };
  }

  /** A restore drill: a failed check is a failed job that still reports every check (ok only if all passed). */
  private async drill(job: DrillJob, ctx: JobContext): Promise<Finished> {
    const keys = this.keyring.forJob();
    const outcome = await runDrill(job, ctx, { link: this.link, keys, settings: this.drillSettings });
    return { ok: outcome.ok, summary: outcome.summary, drill: outcome.report, ...(outcome.error ? { error: outcome.error } : {}) };
  }

  private async restore(job: RestoreJob, ctx: JobContext): Promise<{ summary: string }> {
    // Owners are restored only where the agent can set them; an unprivileged agent restores as itself.
    const preserveOwner = job.preserveOwner && process.getuid?.() === 0;
    const keys = this.keyring.forJob();
    // Every artifact must have somewhere to go before the first byte is written.
    const plan = await Promise.all(job.artifacts.map(async (artifact) => ({ artifact, target: await targetFor(artifact.kind, job.targets) })));
    const summaries: string[] = [];
    const skipped: string[] = [];
    let dirUsed = false;
    for (const { artifact, target } of plan) {
      const input = downloadArtifact(this.link, artifact, ctx, keys);
      // The emptiness check applies to the directory as the restore found it, not to what an earlier artifact wrote.
      const effective = target.kind === 'dir' && dirUsed ? { ...target, force: true } : target;
      if (target.kind === 'dir') dirUsed = true;
      const result = await (await sourceFor(artifact.kind)).restore(input, effective, { preserveOwner, artifact }, ctx);
      summaries.push(result.summary);
      skipped.push(...result.skipped);
    }
    const dir = job.targets.find((t) => t.kind === 'dir');
    if (job.recipe && dir) summaries.push(...(await afterRestore(job.recipe, dir.path, { rewriteHosts: job.rewriteHosts }, ctx)));
    if (skipped.length) summaries.push(`skipped ${skipped.length} entr${skipped.length === 1 ? 'y' : 'ies'}: ${skipped.slice(0, 20).join('; ')}`);
    return { summary: summaries.join('\n') };
  }
}

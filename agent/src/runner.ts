import { describeError, formatBytes, LifeboatError, stepKind, type Logger, type ServerMessage } from '@lifeboat/shared';
import { downloadArtifact } from './download.js';
import type { ServerLink } from './link.js';
import type { JobContext } from './sources/source.js';
import { sourceForArtifact, sourceForStep } from './sources/registry.js';
import { uploadArtifact } from './upload.js';

type BackupJob = Extract<ServerMessage, { type: 'job.backup' }>['payload'];
type RestoreJob = Extract<ServerMessage, { type: 'job.restore' }>['payload'];

/** Runs the jobs the server sends, each with its own abort signal, and reports every outcome as a value. */
export class JobRunner {
  private readonly running = new Map<string, AbortController>();

  constructor(
    private readonly link: ServerLink,
    private readonly log: Logger,
  ) {}

  get activeJobs(): number {
    return this.running.size;
  }

  start(message: Extract<ServerMessage, { type: 'job.backup' | 'job.restore' }>): void {
    const jobId = message.payload.jobId;
    if (this.running.has(jobId)) {
      this.log.warn('ignored a job that is already running', { job: jobId });
      return;
    }
    const controller = new AbortController();
    this.running.set(jobId, controller);
    const ctx = this.context(jobId, controller.signal);
    this.link.send('job.started', { jobId });
    const work = message.type === 'job.backup' ? this.backup(message.payload, ctx) : this.restore(message.payload, ctx);
    work
      .then((summary) => {
        if (controller.signal.aborted) return;
        this.log.info(`job ${jobId} succeeded: ${summary}`);
        this.link.send('job.finished', { jobId, ok: true, summary });
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

  private async backup(job: BackupJob, ctx: JobContext): Promise<string> {
    const { plan } = job;
    this.log.info(`backup of plan ${plan.id} started (job ${job.jobId}, ${plan.steps.length} step(s))`);
    let total = 0;
    // Steps run in the plan's order: dumps before files, as the plan says.
    for (const [index, step] of plan.steps.entries()) {
      const kind = stepKind(step);
      const source = sourceForStep(kind);
      const artifact = await source.backup(step[kind] as never, ctx);
      ctx.log.info(`step ${index + 1}/${plan.steps.length}: ${kind} ${artifact.name}`);
      const result = await uploadArtifact(this.link, index, artifact, ctx);
      total += result.size;
    }
    return `${plan.steps.length} artifact(s), ${formatBytes(total)}`;
  }

  private async restore(job: RestoreJob, ctx: JobContext): Promise<string> {
    // Owners are restored only where the agent can set them; an unprivileged agent restores as itself.
    const preserveOwner = job.preserveOwner && process.getuid?.() === 0;
    const summaries: string[] = [];
    const skipped: string[] = [];
    for (const [index, artifact] of job.artifacts.entries()) {
      const source = sourceForArtifact(artifact.kind);
      const input = downloadArtifact(this.link, artifact, ctx);
      // The emptiness check applies to the target as the restore found it, not to what the first artifact wrote.
      const target = { ...job.target, force: job.target.force || index > 0 };
      const result = await source.restore(input, target, { preserveOwner }, ctx);
      summaries.push(result.summary);
      skipped.push(...result.skipped);
    }
    return [...summaries, ...(skipped.length ? [`skipped ${skipped.length} entr${skipped.length === 1 ? 'y' : 'ies'}: ${skipped.slice(0, 20).join('; ')}`] : [])].join('\n');
  }
}

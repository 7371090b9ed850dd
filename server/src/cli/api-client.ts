import { z } from 'zod';
import {
  AgentView,
  ApiError,
  BackupNowResponse,
  DrillView,
  PruneReport,
  VerifyReport,
  EncryptionView,
  FINISHED_JOB_STATUSES,
  JobView,
  LifeboatError,
  PlanApplyResponse,
  PlanView,
  SnapshotView,
  StatsView,
  TokenCreateResponse,
  listIssues,
  type EncryptionSettings,
  type ErrorCode,
  type JobStatus,
  type RestoreRequest,
} from '@lifeboat/shared';

const DrillRunResponse = z.object({ drill: DrillView, job: JobView });
const DrillList = z.object({ drills: z.array(DrillView) });
const DrillResponse = z.object({ drill: DrillView });

/** The part of `fetch` the client uses, so tests can pass a Hono app's `request` or a fake. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface ApiClientOptions {
  /** e.g. http://127.0.0.1:7400 (a trailing slash is ignored). */
  baseUrl: string;
  /** The admin token; sent only in the Authorization header, never in a URL or a message. */
  token: string;
  fetch: FetchLike;
  /** Per request; a hung server should not hang the CLI. */
  timeoutMs?: number;
}

/** The server answered with an error body (or an error status without one). */
export class ApiRequestError extends LifeboatError {
  constructor(
    readonly status: number,
    code: ErrorCode,
    message: string,
    details?: string[],
  ) {
    super(code, message, details);
    this.name = 'ApiRequestError';
  }
}

/** No HTTP answer at all: refused, unresolvable, timed out. `reason` is the system code, e.g. ECONNREFUSED. */
export class ServerUnreachableError extends Error {
  constructor(
    readonly baseUrl: string,
    readonly reason: string,
  ) {
    super(`cannot reach the Lifeboat server at ${baseUrl}: ${reason} — is it running? (lifeboat-server start)`);
    this.name = 'ServerUnreachableError';
  }
}

const AgentList = z.object({ agents: z.array(AgentView) });
const PlanList = z.object({ plans: z.array(PlanView) });
const PlanDeleted = z.object({ deleted: z.string() });
const JobResponse = z.object({ job: JobView });
const JobList = z.object({ jobs: z.array(JobView) });
const SnapshotResponse = z.object({ snapshot: SnapshotView });
const SnapshotList = z.object({ snapshots: z.array(SnapshotView) });
const AgentResponse = z.object({ agent: AgentView });

export interface JobFilter {
  plan?: string;
  agent?: string;
  status?: JobStatus;
  limit?: number;
}

export interface SnapshotFilter {
  plan?: string;
  agent?: string;
}

export class ApiClient {
  readonly baseUrl: string;
  readonly #token: string;
  readonly #fetch: FetchLike;
  readonly #timeoutMs: number;

  constructor(options: ApiClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.#token = options.token;
    this.#fetch = options.fetch;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
  }

  createToken(expires?: string) {
    return this.#call('POST', '/v1/tokens', TokenCreateResponse, expires === undefined ? {} : { expires });
  }

  async listAgents() {
    return (await this.#call('GET', '/v1/agents', AgentList)).agents;
  }

  async revokeAgent(name: string) {
    return (await this.#call('POST', `/v1/agents/${seg(name)}/revoke`, AgentResponse)).agent;
  }

  /** `file` is sent as written; the server applies its own defaults and validates once more. */
  applyPlans(file: unknown) {
    return this.#call('POST', '/v1/plans', PlanApplyResponse, file);
  }

  async listPlans() {
    return (await this.#call('GET', '/v1/plans', PlanList)).plans;
  }

  getPlan(id: string) {
    return this.#call('GET', `/v1/plans/${seg(id)}`, PlanView);
  }

  async deletePlan(id: string) {
    return (await this.#call('DELETE', `/v1/plans/${seg(id)}`, PlanDeleted)).deleted;
  }

  async backupNow(planId: string) {
    return (await this.#call('POST', `/v1/plans/${seg(planId)}/backup`, BackupNowResponse)).job;
  }

  async listJobs(filter: JobFilter = {}) {
    return (await this.#call('GET', `/v1/jobs${query({ ...filter })}`, JobList)).jobs;
  }

  /** With waitMs, the server answers as soon as the job ends, or after waitMs. */
  async getJob(id: string, waitMs = 0) {
    return (await this.#call('GET', `/v1/jobs/${seg(id)}${waitMs > 0 ? `?wait=${waitMs}` : ''}`, JobResponse)).job;
  }

  async listSnapshots(filter: SnapshotFilter = {}) {
    return (await this.#call('GET', `/v1/snapshots${query({ ...filter })}`, SnapshotList)).snapshots;
  }

  async getSnapshot(id: string) {
    return (await this.#call('GET', `/v1/snapshots/${seg(id)}`, SnapshotResponse)).snapshot;
  }

  async runDrill(planId: string, snapshotId?: string) {
    return this.#call('POST', `/v1/plans/${seg(planId)}/drill`, DrillRunResponse, snapshotId ? { snapshotId } : {});
  }

  async listDrills(planId?: string) {
    return (await this.#call('GET', `/v1/drills${query({ plan: planId })}`, DrillList)).drills;
  }

  async getDrill(id: string) {
    return (await this.#call('GET', `/v1/drills/${seg(id)}`, DrillResponse)).drill;
  }

  prune(request: { plan?: string; dryRun: boolean; grace?: string }) {
    return this.#call('POST', '/v1/prune', PruneReport, request);
  }

  verify(request: { plan?: string; readData: boolean }) {
    return this.#call('POST', '/v1/verify', VerifyReport, request);
  }

  encryption() {
    return this.#call('GET', '/v1/encryption', EncryptionView);
  }

  initEncryption(settings: EncryptionSettings) {
    return this.#call('POST', '/v1/encryption', EncryptionView, settings);
  }

  declineEncryption() {
    return this.#call('POST', '/v1/encryption/off', EncryptionView);
  }

  stats() {
    return this.#call('GET', '/v1/stats', StatsView);
  }

  async restore(request: RestoreRequest) {
    return (await this.#call('POST', '/v1/restores', JobResponse, request)).job;
  }

  async #call<S extends z.ZodType>(method: string, path: string, schema: S, body?: unknown): Promise<z.infer<S>> {
    const response = await this.#send(method, path, body);
    const data = await readJson(response, method, path);
    if (!response.ok) throw toRequestError(response, data);
    const parsed = schema.safeParse(data);
    if (!parsed.success) {
      // Parsed on receipt: a server of another version should fail loudly here, not deep in a printer.
      const problems = listIssues(parsed.error).slice(0, 5);
      throw new LifeboatError('protocol', `unexpected response from ${method} ${path} (is the server the same version as this CLI?)`, problems);
    }
    return parsed.data;
  }

  async #send(method: string, path: string, body: unknown): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.#token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await this.#fetch(this.baseUrl + path, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      throw new ServerUnreachableError(this.baseUrl, networkReason(err));
    }
  }
}

/** Ids and names go into the path as one segment, whatever they contain. */
function seg(value: string): string {
  return encodeURIComponent(value);
}

function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined) search.set(key, String(value));
  const text = search.toString();
  return text ? `?${text}` : '';
}

async function readJson(response: Response, method: string, path: string): Promise<unknown> {
  const text = await response.text();
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // Usually a proxy's HTML error page, or --server pointing at something that is not Lifeboat.
    const snippet = text.slice(0, 120).replace(/\s+/g, ' ');
    throw new LifeboatError('protocol', `${method} ${path} answered ${response.status} with a body that is not JSON: ${snippet}`);
  }
}

function toRequestError(response: Response, data: unknown): ApiRequestError {
  const parsed = ApiError.safeParse(data);
  if (parsed.success) {
    const { code, message, details } = parsed.data.error;
    return new ApiRequestError(response.status, code, message, details);
  }
  const text = `${response.status} ${response.statusText}`.trim();
  return new ApiRequestError(response.status, codeForStatus(response.status), `the server answered ${text}`);
}

function codeForStatus(status: number): ErrorCode {
  if (status === 400) return 'bad_request';
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not_found';
  if (status === 409) return 'conflict';
  return 'internal';
}

/** Node's fetch wraps the system error: TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } }). */
export function networkReason(err: unknown): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'timed out';
  const cause = err instanceof Error ? err.cause : undefined;
  const code = errorCode(cause) ?? firstAggregateCode(cause) ?? errorCode(err);
  if (code) return code;
  return err instanceof Error ? err.message : String(err);
}

function errorCode(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const code = (value as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** Happy-eyeballs tries several addresses and reports an AggregateError whose parts carry the codes. */
function firstAggregateCode(value: unknown): string | undefined {
  if (!(value instanceof AggregateError)) return undefined;
  for (const inner of value.errors) {
    const code = errorCode(inner);
    if (code) return code;
  }
  return undefined;
}

export function isFinished(job: JobView): boolean {
  return FINISHED_JOB_STATUSES.includes(job.status);
}

export interface WaitOptions {
  sleep: (ms: number) => Promise<void>;
  intervalMs?: number;
  /** Called after every poll, finished or not, e.g. to draw progress. */
  onPoll?: (job: JobView) => void;
  /** Consecutive polls that may fail to reach the server (a restart) before giving up. */
  maxUnreachablePolls?: number;
}

/**
 * Polls a job until it is succeeded, failed or cancelled, and returns it as it ended. Each poll is held by the
 * server until the job ends or `intervalMs` passes, so the end is seen at once, not at the next poll.
 */
export async function waitForJob(client: Pick<ApiClient, 'getJob'>, jobId: string, options: WaitOptions): Promise<JobView> {
  const interval = options.intervalMs ?? 500;
  const maxUnreachable = options.maxUnreachablePolls ?? 20;
  let unreachable = 0;
  for (;;) {
    let job: JobView;
    const asked = Date.now();
    try {
      job = await client.getJob(jobId, interval);
      unreachable = 0;
    } catch (err) {
      if (!(err instanceof ServerUnreachableError) || ++unreachable > maxUnreachable) throw err;
      await options.sleep(interval);
      continue;
    }
    options.onPoll?.(job);
    if (isFinished(job)) return job;
    // A server that did not hold the answer (an older one) is polled at the interval, not in a tight loop.
    const held = Date.now() - asked;
    if (held < interval / 2) await options.sleep(interval);
  }
}

import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import {
  DrillRunRequest,
  EncryptionSettings,
  EnrollRequest,
  FINISHED_JOB_STATUSES,
  JobStatus,
  JobWaitQuery,
  LIFEBOAT_VERSION,
  LifeboatError,
  listIssues,
  newId,
  parseDuration,
  parseOptions,
  parsePlanFile,
  PruneRequest,
  VerifyRequest,
  RestoreRequest,
  TokenCreateRequest,
  type ErrorCode,
  type StatsView,
  type Logger,
  type StoreBackend,
} from '@lifeboat/shared';
import { bearerToken, hashSecret, newSecret, secretMatches } from './auth.js';
import type { Catalog } from './catalog/catalog.js';
import type { RepositoryEncryption } from './encryption.js';
import type { Hub } from './hub/hub.js';
import type { Clock, JobService } from './jobs.js';
import { scheduleProblems, type Scheduler } from './scheduler.js';
import { collectGarbage } from './retention/gc.js';
import { planPrune, removeSnapshots } from './retention/prune.js';
import { verifyStore } from './retention/verify.js';
import { agentNames, agentView, drillView, jobView, snapshotView } from './views.js';

export interface AppDeps {
  catalog: Catalog;
  jobs: JobService;
  hub: Pick<Hub, 'isOnline' | 'pushPlans' | 'disconnect'>;
  scheduler: Pick<Scheduler, 'sync'>;
  encryption: RepositoryEncryption;
  backend: StoreBackend;
  /** How long an unreferenced chunk stays before garbage collection may delete it. */
  gcGraceMs: number;
  adminTokenHash: string;
  clock: Clock;
  log: Logger;
}

const STATUS: Partial<Record<ErrorCode, ContentfulStatusCode>> = {
  bad_request: 400,
  invalid_plan: 400,
  unknown_agent: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
};

/** The HTTP API as a value: it listens on nothing (main.ts wires it to a socket; tests call app.request()). */
export function createApp(deps: AppDeps): Hono {
  const { catalog, jobs, hub, clock } = deps;
  const app = new Hono();

  app.onError((err, c) => {
    if (err instanceof LifeboatError) {
      return c.json({ error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } }, STATUS[err.code] ?? 500);
    }
    if (err instanceof HTTPException) return c.json({ error: { code: 'bad_request', message: err.message } }, err.status);
    deps.log.error('unexpected error in an API route', { path: c.req.path, error: err.message });
    return c.json({ error: { code: 'internal', message: 'internal server error; see the server log' } }, 500);
  });
  app.notFound((c) => c.json({ error: { code: 'not_found', message: `no route ${c.req.method} ${c.req.path}` } }, 404));

  app.get('/v1/health', (c) => c.json({ ok: true as const, version: LIFEBOAT_VERSION, serverTime: new Date(clock()).toISOString() }));

  // Enrollment authenticates by its one-time token, not the admin token.
  app.post('/v1/enroll', async (c) => {
    const req = await body(c, EnrollRequest);
    const secret = newSecret();
    const agent = catalog.enroll({ tokenHash: hashSecret(req.token), agentId: newId('agt'), name: req.name, labels: req.labels, secretHash: hashSecret(secret), now: clock() });
    deps.log.info('agent enrolled', { agent: agent.name, labels: agent.labels, host: req.hostname });
    return c.json({ agentId: agent.id, name: agent.name, secret });
  });

  const admin = new Hono();
  admin.use('*', adminAuth(deps.adminTokenHash));

  admin.post('/tokens', async (c) => {
    const req = await body(c, TokenCreateRequest);
    const token = `lbe_${newSecret()}`;
    const now = clock();
    const expiresAt = now + parseDuration(req.expires)!;
    catalog.addEnrollmentToken({ id: newId('tok'), tokenHash: hashSecret(token), createdAt: now, expiresAt });
    return c.json({ token, expiresAt: new Date(expiresAt).toISOString() });
  });

  const encryptionView = () => ({ encryption: deps.encryption.current, state: deps.encryption.state });
  admin.get('/encryption', (c) => c.json(encryptionView()));
  admin.post('/encryption', async (c) => {
    const settings = await body(c, EncryptionSettings);
    await deps.encryption.init(settings);
    deps.log.info('repository encryption set up; agents need the passphrase (passphraseFile) from now on');
    return c.json(encryptionView());
  });
  admin.post('/encryption/off', async (c) => {
    await deps.encryption.decline();
    deps.log.warn('backups will be stored unencrypted, as the owner chose (`lifeboat encryption init` encrypts from then on)');
    return c.json(encryptionView());
  });

  admin.get('/agents', (c) => c.json({ agents: catalog.listAgents().map((a) => agentView(a, hub.isOnline(a.id))) }));
  admin.post('/agents/:name/revoke', (c) => {
    const agent = catalog.agentByName(c.req.param('name'));
    if (!agent) throw new LifeboatError('not_found', `no agent named "${c.req.param('name')}"`);
    if (agent.revokedAt === null) catalog.revokeAgent(agent.id, clock());
    hub.disconnect(agent.id, 'agent revoked');
    deps.log.info('agent revoked', { agent: agent.name });
    return c.json({ agent: agentView(catalog.agentById(agent.id)!, false) });
  });

  admin.post('/plans', async (c) => {
    const parsed = parsePlanFile(await json(c));
    if (!parsed.ok) throw new LifeboatError('invalid_plan', `the plan file has ${parsed.problems.length} problem(s); nothing was applied`, parsed.problems);
    const plans = parsed.value.plans;
    const problems = scheduleProblems(plans);
    plans.forEach((plan, i) => {
      const agent = catalog.agentByName(plan.agent);
      if (!agent || agent.revokedAt !== null) problems.push(`plans[${i}].agent: no enrolled agent named "${plan.agent}" (see \`lifeboat agents list\`)`);
    });
    if (problems.length) throw new LifeboatError('invalid_plan', `the plan file has ${problems.length} problem(s); nothing was applied`, problems);
    const previousAgents = plans.map((p) => catalog.plan(p.id)?.plan.agent).filter((a): a is string => !!a);
    const result = catalog.applyPlans(plans, clock());
    deps.scheduler.sync();
    hub.pushPlans([...previousAgents, ...plans.map((p) => p.agent)]);
    deps.log.info('plans applied', { created: result.created.join(',') || undefined, updated: result.updated.join(',') || undefined });
    return c.json(result);
  });
  admin.get('/plans', (c) => c.json({ plans: catalog.listPlans().map(planView) }));
  admin.get('/plans/:id', (c) => c.json(planView(requirePlan(catalog, c.req.param('id')))));
  admin.delete('/plans/:id', (c) => {
    const row = requirePlan(catalog, c.req.param('id'));
    catalog.deletePlan(row.plan.id);
    deps.scheduler.sync();
    hub.pushPlans([row.plan.agent]);
    return c.json({ deleted: row.plan.id });
  });
  admin.post('/plans/:id/backup', (c) => {
    const { job, created } = jobs.requestBackup(c.req.param('id'), 'manual');
    if (!created) throw new LifeboatError('conflict', `plan ${job.planId} already has job ${job.id} ${job.status}; a plan never runs twice at once`);
    return c.json({ job: jobView(job, agentNames(catalog)(job.agentId)) });
  });

  admin.get('/jobs', (c) => {
    const q = c.req.query();
    const status = q.status ? JobStatus.safeParse(q.status) : undefined;
    if (status && !status.success) throw new LifeboatError('bad_request', `unknown status "${q.status}"; one of ${JobStatus.options.join(', ')}`);
    const agentId = q.agent ? requireAgentId(catalog, q.agent) : undefined;
    const names = agentNames(catalog);
    const rows = catalog.listJobs({ planId: q.plan, agentId, status: status?.data, limit: q.limit ? Math.min(1000, Number(q.limit) || 50) : 50 });
    return c.json({ jobs: rows.map((j) => jobView(j, names(j.agentId))) });
  });
  // ?wait=MS: answer as soon as the job has ended, or after MS (at most 30 s) with how it is going, so a
  // client waiting for a job learns of its end at once instead of at its next poll.
  admin.get('/jobs/:id', async (c) => {
    const id = c.req.param('id');
    const wait = JobWaitQuery.safeParse(c.req.query());
    if (!wait.success) throw new LifeboatError('bad_request', 'wait must be a number of milliseconds from 0 to 30000');
    const until = Date.now() + (wait.data.wait ?? 0);
    let job = catalog.job(id);
    while (job && !FINISHED_JOB_STATUSES.includes(job.status as JobStatus) && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      job = catalog.job(id);
    }
    if (!job) throw new LifeboatError('not_found', `no job "${id}"`);
    return c.json({ job: jobView(job, agentNames(catalog)(job.agentId)) });
  });

  admin.get('/snapshots', (c) => {
    const q = c.req.query();
    const agentId = q.agent ? requireAgentId(catalog, q.agent) : undefined;
    const names = agentNames(catalog);
    const rows = catalog.listSnapshots({ planId: q.plan, agentId });
    return c.json({ snapshots: rows.map((s) => snapshotView(s, names(s.agentId), catalog.artifactsOf(s.id))) });
  });
  admin.get('/snapshots/:id', (c) => {
    const snap = catalog.snapshot(c.req.param('id'));
    if (!snap) throw new LifeboatError('not_found', `no snapshot "${c.req.param('id')}"`);
    return c.json({ snapshot: snapshotView(snap, agentNames(catalog)(snap.agentId), catalog.artifactsOf(snap.id)) });
  });

  admin.get('/stats', (c) => {
    const { plans, total } = catalog.storeStats();
    const stats: StatsView = { plans: plans.map((p) => ({ ...p, dedupRatio: dedupRatio(p) })), total: { ...total, dedupRatio: dedupRatio(total) } };
    return c.json(stats);
  });

  admin.post('/plans/:id/drill', async (c) => {
    const req = await body(c, DrillRunRequest);
    const { drill, job } = jobs.requestDrill(c.req.param('id'), { trigger: 'manual', ...(req.snapshotId ? { snapshotId: req.snapshotId } : {}) });
    const names = agentNames(catalog);
    return c.json({ drill: drillView(drill, drill.agentId ? names(drill.agentId) : null), job: jobView(job, names(job.agentId)) });
  });
  admin.get('/drills', (c) => {
    const names = agentNames(catalog);
    const planId = c.req.query('plan');
    return c.json({ drills: catalog.listDrills(planId ? { planId } : {}).map((d) => drillView(d, d.agentId ? names(d.agentId) : null)) });
  });
  admin.get('/drills/:id', (c) => {
    const drill = catalog.drill(c.req.param('id'));
    if (!drill) throw new LifeboatError('not_found', `no drill "${c.req.param('id')}"`);
    return c.json({ drill: drillView(drill, drill.agentId ? agentNames(catalog)(drill.agentId) : null) });
  });

  admin.post('/prune', async (c) => {
    const req = await body(c, PruneRequest);
    const now = clock();
    const plans = planPrune(catalog, now, req.plan);
    const removed = req.dryRun ? 0 : await removeSnapshots(catalog, deps.backend, plans, now, deps.log);
    const graceMs = req.grace ? (parseDuration(req.grace) ?? 0) : deps.gcGraceMs;
    const gc = await collectGarbage(catalog, deps.backend, jobs, { now, graceMs, dryRun: req.dryRun, log: deps.log });
    return c.json({ dryRun: req.dryRun, plans, removed, gc });
  });
  admin.post('/verify', async (c) => {
    const req = await body(c, VerifyRequest);
    if (req.plan) requirePlan(catalog, req.plan);
    return c.json(await verifyStore(catalog, deps.backend, { ...(req.plan ? { planId: req.plan } : {}), readData: req.readData, log: deps.log }));
  });

  admin.post('/restores', async (c) => {
    const req = await body(c, RestoreRequest);
    const job = jobs.requestRestore(req);
    return c.json({ job: jobView(job, req.agent) });
  });

  app.route('/v1', admin);
  return app;
}

function adminAuth(tokenHash: string): MiddlewareHandler {
  return async function adminAuth(c, next) {
    const token = bearerToken(c.req.header('authorization'));
    if (!token || !secretMatches(token, tokenHash)) {
      throw new LifeboatError('unauthorized', 'missing or wrong admin token (Authorization: Bearer <token from DATA/admin-token>)');
    }
    await next();
  };
}

async function json(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw new LifeboatError('bad_request', 'the request body is not valid JSON');
  }
}

async function body<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  const result = schema.safeParse(await json(c), parseOptions);
  if (!result.success) throw new LifeboatError('bad_request', 'invalid request body', listIssues(result.error));
  return result.data;
}

function requirePlan(catalog: Catalog, id: string) {
  const row = catalog.plan(id);
  if (!row) throw new LifeboatError('not_found', `no plan "${id}"; see \`lifeboat plan list\``);
  return row;
}

function requireAgentId(catalog: Catalog, name: string): string {
  const agent = catalog.agentByName(name);
  if (!agent) throw new LifeboatError('not_found', `no agent named "${name}"`);
  return agent.id;
}

function dedupRatio(figures: { bytesIn: number; bytesStored: number }): number | null {
  return figures.bytesStored > 0 ? figures.bytesIn / figures.bytesStored : null;
}

function planView(row: { plan: unknown; createdAt: number; updatedAt: number }) {
  return { plan: row.plan, createdAt: new Date(row.createdAt).toISOString(), updatedAt: new Date(row.updatedAt).toISOString() };
}

import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { parseDocument } from 'yaml';
import {
  JobStatus,
  LIFEBOAT_VERSION,
  LifeboatError,
  RestoreRequest,
  listIssues,
  newEncryptionSettings,
  parseArtifactIndex,
  parseDatabaseUrl,
  parseHostRewrite,
  parseDuration,
  parsePlanFile,
  type JobView,
} from '@lifeboat/shared';
import { ApiClient, ApiRequestError, ServerUnreachableError, isFinished, waitForJob, type FetchLike } from './api-client.js';
import {
  Printer,
  ProgressTracker,
  agentTable,
  applySummary,
  formatTime,
  jobDetails,
  jobOutcome,
  jobTable,
  planTable,
  planYaml,
  shellQuote,
  snapshotDetails,
  snapshotTable,
  statsTable,
  drillDetails,
  drillTable,
  pruneLines,
  verifyLines,
  type Sink,
} from './output.js';

/**
 * `lifeboat`, the admin CLI: a thin client of the server's HTTP API.
 * Everything it touches outside itself (fetch, output, environment, clock) comes in through `MainDeps`,
 * so tests drive it end to end against an in-memory server.
 */
export interface MainDeps {
  fetch?: FetchLike;
  stdout?: Sink;
  stderr?: Sink;
  env?: Record<string, string | undefined>;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  /** Milliseconds between polls while waiting for a job. */
  pollIntervalMs?: number;
}

export const DEFAULT_SERVER = 'http://127.0.0.1:7400';

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

/** Wrong invocation: exit code 2, like commander's own usage errors. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly details: string[] = [],
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

interface GlobalOptions {
  server?: string;
  token?: string;
}

interface Context {
  out: Printer;
  err: Printer;
  env: Record<string, string | undefined>;
  fetch: FetchLike;
  sleep: (ms: number) => Promise<void>;
  now: () => number;
  pollIntervalMs: number;
  globals: () => GlobalOptions;
}

/** Runs the CLI with process-style argv (`[node, script, ...args]`) and returns the exit code. */
export async function main(argv: string[], deps: MainDeps = {}): Promise<number> {
  const ctx = createContext(deps);
  let exitCode = EXIT_OK;
  const program = buildProgram(ctx, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (err) {
    return reportError(err, ctx);
  }
}

function createContext(deps: MainDeps): Context {
  const globals: GlobalOptions = {};
  return {
    out: new Printer(deps.stdout ?? process.stdout),
    err: new Printer(deps.stderr ?? process.stderr),
    env: deps.env ?? process.env,
    fetch: deps.fetch ?? ((url, init) => fetch(url, init)),
    sleep: deps.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    now: deps.now ?? Date.now,
    pollIntervalMs: deps.pollIntervalMs ?? 500,
    globals: () => globals,
  };
}

// ── connection ────────────────────────────────────────────────────────────────

function serverUrl(ctx: Context): string {
  const raw = ctx.globals().server ?? ctx.env.LIFEBOAT_SERVER ?? DEFAULT_SERVER;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--server must be a URL such as ${DEFAULT_SERVER}, got "${raw}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--server must be an http:// or https:// URL, got "${raw}"`);
  return url.toString().replace(/\/+$/, '');
}

function adminToken(ctx: Context): string {
  const token = (ctx.globals().token ?? ctx.env.LIFEBOAT_TOKEN ?? '').trim();
  if (token) return token;
  throw new UsageError(
    'no admin token: pass --token or set LIFEBOAT_TOKEN. ' +
      'The server printed it at its first start and keeps it in DATA/admin-token (DATA is the server\'s data directory).',
  );
}

/** Built per command, after commander has parsed the global options. */
function client(ctx: Context): ApiClient {
  const baseUrl = serverUrl(ctx);
  return new ApiClient({ baseUrl, token: adminToken(ctx), fetch: ctx.fetch });
}

// ── program ───────────────────────────────────────────────────────────────────

type SetExit = (code: number) => void;

function buildProgram(ctx: Context, setExit: SetExit): Command {
  const program = new Command('lifeboat')
    .description('Administer a Lifeboat server: enroll agents, apply plans, run backups and restores, inspect jobs and snapshots.')
    .version(LIFEBOAT_VERSION)
    .option('--server <url>', `server URL (env LIFEBOAT_SERVER, default ${DEFAULT_SERVER})`)
    .option('--token <token>', 'admin token (env LIFEBOAT_TOKEN)')
    // Set before adding subcommands: commander copies these settings into each one it creates.
    .exitOverride()
    .configureOutput({
      writeOut: (text) => ctx.out.raw(text),
      writeErr: (text) => ctx.err.raw(text),
    })
    .showHelpAfterError('(add --help for usage)')
    .addHelpText(
      'after',
      [
        '',
        'Environment:',
        `  LIFEBOAT_SERVER  server URL, default ${DEFAULT_SERVER}`,
        '  LIFEBOAT_TOKEN   admin token; lifeboat-server prints it at its first start and keeps it in DATA/admin-token',
        '',
        'Exit codes: 0 ok, 1 failed (including a job that did not succeed), 2 usage error.',
        '',
        'Example:',
        '  $ export LIFEBOAT_TOKEN=$(cat /var/lib/lifeboat/admin-token)',
        '  $ lifeboat plan apply plans.yaml && lifeboat backup now chatwoot-prod --wait',
      ].join('\n'),
    );
  program.hook('preAction', () => {
    Object.assign(ctx.globals(), program.opts<GlobalOptions>());
  });
  const run = (fn: () => Promise<number>) => fn().then(setExit);

  addTokenCommands(program, ctx, run);
  addAgentCommands(program, ctx, run);
  addPlanCommands(program, ctx, run);
  addBackupCommands(program, ctx, run);
  addJobCommands(program, ctx, run);
  addSnapshotCommands(program, ctx, run);
  addRestoreCommand(program, ctx, run);
  addEncryptionCommands(program, ctx, run);
  addRetentionCommands(program, ctx, run);
  addDrillCommands(program, ctx, run);
  addStatsCommand(program, ctx, run);
  return program;
}

type Run = (fn: () => Promise<number>) => Promise<void>;

function example(...lines: string[]): string {
  return ['', 'Example:', ...lines.map((l) => `  $ ${l}`)].join('\n');
}

// ── token ─────────────────────────────────────────────────────────────────────

function addTokenCommands(program: Command, ctx: Context, run: Run): void {
  const token = program.command('token').description('enrollment tokens for new agents');
  token
    .command('create')
    .description('create a one-time enrollment token and print the command that enrolls an agent with it')
    .option('--expires <duration>', 'how long the token stays valid, e.g. 1h, 24h, 7d', '24h')
    .addHelpText('after', example('lifeboat token create --expires 2h'))
    .action((opts: { expires: string }) => run(() => createToken(ctx, opts.expires)));
}

async function createToken(ctx: Context, expires: string): Promise<number> {
  if (parseDuration(expires) === null) throw new UsageError(`--expires must be a duration such as 1h, 24h or 7d, got "${expires}"`);
  const api = client(ctx);
  const created = await api.createToken(expires);
  ctx.out.lines([
    `enrollment token (one-time, expires ${formatTime(created.expiresAt)}):`,
    `  ${created.token}`,
    'enroll an agent by running on its machine (replace <NAME> with the agent\'s name, e.g. web-1):',
    `  lifeboat-agent enroll --server ${shellQuote(api.baseUrl)} --token ${shellQuote(created.token)} --name <NAME>`,
  ]);
  if (isLoopback(api.baseUrl)) {
    ctx.err.line(`note: ${api.baseUrl} is this machine's loopback address; an agent elsewhere needs the server's reachable URL in --server.`);
  }
  return EXIT_OK;
}

function isLoopback(baseUrl: string): boolean {
  const host = new URL(baseUrl).hostname;
  return host === 'localhost' || host === '[::1]' || host.startsWith('127.');
}

// ── agents ────────────────────────────────────────────────────────────────────

function addAgentCommands(program: Command, ctx: Context, run: Run): void {
  const agents = program.command('agents').description('enrolled agents');
  agents
    .command('list')
    .description('list agents: online or not, version, labels, last seen')
    .option('--json', 'print the agents as JSON')
    .action((opts: { json?: boolean }) => run(() => listAgents(ctx, opts.json === true)));
  agents
    .command('revoke')
    .description('revoke an agent: its secret stops working and it can no longer connect')
    .argument('<name>', 'the agent\'s name')
    .addHelpText('after', example('lifeboat agents revoke web-1'))
    .action((name: string) => run(() => revokeAgent(ctx, name)));
}

async function listAgents(ctx: Context, json: boolean): Promise<number> {
  const agents = await client(ctx).listAgents();
  if (json) ctx.out.json(agents);
  else if (agents.length === 0) ctx.err.line('no agents enrolled yet; create a token with: lifeboat token create');
  else ctx.out.lines(agentTable(agents, ctx.now()));
  return EXIT_OK;
}

async function revokeAgent(ctx: Context, name: string): Promise<number> {
  const agent = await client(ctx).revokeAgent(name);
  ctx.out.line(`revoked agent ${agent.name}${agent.revokedAt ? ` at ${formatTime(agent.revokedAt)}` : ''}`);
  return EXIT_OK;
}

// ── retention and verification ────────────────────────────────────────────────

function addRetentionCommands(program: Command, ctx: Context, run: Run): void {
  program
    .command('prune')
    .description("apply each plan's retention policy (restic's forget semantics), then collect chunks no snapshot needs")
    .option('--plan <id>', 'only this plan')
    .option('--dry-run', 'show every snapshot with keep/remove and the rule that decided; change nothing')
    .option('--grace <duration>', 'collect only chunks unreferenced for longer than this (default: the server\'s, 24h)')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', example('lifeboat prune --dry-run', 'lifeboat prune --plan web'))
    .action((opts: { plan?: string; dryRun?: boolean; grace?: string; json?: boolean }) => run(() => prune(ctx, opts)));
  program
    .command('verify')
    .description('check that every chunk each snapshot references exists (and with --read-data, that its content matches its id)')
    .option('--plan <id>', 'only this plan\'s snapshots')
    .option('--read-data', 'read and check every chunk, not only that it exists')
    .option('--json', 'print the report as JSON')
    .action((opts: { plan?: string; readData?: boolean; json?: boolean }) => run(() => verify(ctx, opts)));
}

async function prune(ctx: Context, opts: { plan?: string; dryRun?: boolean; grace?: string; json?: boolean }): Promise<number> {
  if (opts.grace !== undefined && parseDuration(opts.grace) === null && !/^0[smhdw]?$/.test(opts.grace)) throw new UsageError(`--grace takes a duration such as 1h or 7d, got "${opts.grace}"`);
  const report = await client(ctx).prune({ ...(opts.plan ? { plan: opts.plan } : {}), dryRun: opts.dryRun === true, ...(opts.grace ? { grace: opts.grace } : {}) });
  if (opts.json) ctx.out.json(report);
  else ctx.out.lines(pruneLines(report));
  return EXIT_OK;
}

async function verify(ctx: Context, opts: { plan?: string; readData?: boolean; json?: boolean }): Promise<number> {
  const report = await client(ctx).verify({ ...(opts.plan ? { plan: opts.plan } : {}), readData: opts.readData === true });
  if (opts.json) ctx.out.json(report);
  else (report.problems.length ? ctx.err : ctx.out).lines(verifyLines(report));
  return report.problems.length ? EXIT_FAILED : EXIT_OK;
}

// ── drills ────────────────────────────────────────────────────────────────────

function addDrillCommands(program: Command, ctx: Context, run: Run): void {
  const drill = program.command('drill').description('restore drills: prove a plan\'s backups restore, on an isolated agent');
  drill
    .command('run')
    .description('restore a snapshot (the newest by default) into scratch on a drill agent, check it, and wait for the verdict')
    .argument('<plan>', 'plan id')
    .option('--snapshot <id>', 'drill this snapshot instead of the newest')
    .option('--no-wait', 'queue the drill and return')
    .addHelpText('after', example('lifeboat drill run web', 'lifeboat drill run web --snapshot snap_7hx2m4q9ce3kwz5tbn8a'))
    .action((plan: string, opts: { snapshot?: string; wait: boolean }) => run(() => runDrill(ctx, plan, opts)));
  drill
    .command('list')
    .description('list drills: plan, snapshot, agent, verdict, restore time')
    .option('--plan <id>', 'only this plan')
    .option('--json', 'print the drills as JSON')
    .action((opts: { plan?: string; json?: boolean }) => run(() => listDrills(ctx, opts)));
  drill
    .command('show')
    .description('show a drill with every check')
    .argument('<id>', 'drill id')
    .option('--json', 'print the drill as JSON')
    .action((id: string, opts: { json?: boolean }) => run(() => showDrill(ctx, id, opts.json === true)));
}

async function runDrill(ctx: Context, planId: string, opts: { snapshot?: string; wait: boolean }): Promise<number> {
  const api = client(ctx);
  const { drill, job } = await api.runDrill(planId, opts.snapshot);
  ctx.out.line(`queued drill ${drill.id} of snapshot ${drill.snapshotId} on agent ${drill.agentName ?? '?'} (job ${job.id})`);
  if (!opts.wait) return EXIT_OK;
  await followJob(ctx, api, job);
  const final = await api.getDrill(drill.id);
  const lines = drillDetails(final);
  (final.status === 'passed' ? ctx.out : ctx.err).lines(lines);
  return final.status === 'passed' ? EXIT_OK : EXIT_FAILED;
}

async function listDrills(ctx: Context, opts: { plan?: string; json?: boolean }): Promise<number> {
  const drills = await client(ctx).listDrills(opts.plan);
  if (opts.json) ctx.out.json(drills);
  else if (drills.length === 0) ctx.err.line('no drills yet; run one with: lifeboat drill run PLAN');
  else ctx.out.lines(drillTable(drills));
  return EXIT_OK;
}

async function showDrill(ctx: Context, id: string, json: boolean): Promise<number> {
  const drill = await client(ctx).getDrill(id);
  if (json) ctx.out.json(drill);
  else ctx.out.lines(drillDetails(drill));
  return EXIT_OK;
}

// ── encryption ────────────────────────────────────────────────────────────────

function addEncryptionCommands(program: Command, ctx: Context, run: Run): void {
  const enc = program.command('encryption').description('repository encryption (the server never sees the passphrase)');
  enc
    .command('init')
    .description('encrypt every backup from now on with a passphrase; only its KDF salt and key check go to the server')
    .requiredOption('--passphrase-file <file>', 'a file holding the passphrase (at least 12 characters); give agents the same file')
    .addHelpText('after', example('lifeboat encryption init --passphrase-file /root/lifeboat.pass') + '\nThen set "passphraseFile" in each agent\'s config (restore and drill agents too), and keep a copy of the passphrase offline: without it no backup can be restored.')
    .action((opts: { passphraseFile: string }) => run(() => initEncryption(ctx, opts.passphraseFile)));
  enc
    .command('off')
    .description('store backups unencrypted (for a demo, or a store on a disk you trust); `init` can still encrypt later ones')
    .addHelpText('after', example('lifeboat encryption off') + '\nA new repository takes no backup until it is given a passphrase (init) or this.')
    .action(() => run(() => declineEncryption(ctx)));
  enc
    .command('status')
    .description('say whether backups are encrypted')
    .action(() => run(() => encryptionStatus(ctx)));
}

async function declineEncryption(ctx: Context): Promise<number> {
  await client(ctx).declineEncryption();
  ctx.out.line('backups will be stored unencrypted (`lifeboat encryption init --passphrase-file FILE` encrypts them from then on)');
  return EXIT_OK;
}

async function initEncryption(ctx: Context, file: string): Promise<number> {
  let passphrase: string;
  try {
    passphrase = (await readFile(file, 'utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  let settings;
  try {
    settings = newEncryptionSettings(passphrase);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  await client(ctx).initEncryption(settings);
  ctx.out.line('repository encryption is on: agents must now have passphraseFile in their config (same passphrase)');
  return EXIT_OK;
}

async function encryptionStatus(ctx: Context): Promise<number> {
  const { encryption: settings, state } = await client(ctx).encryption();
  if (settings) ctx.out.line(`encrypted (scrypt N=${settings.kdf.N}, r=${settings.kdf.r}, p=${settings.kdf.p})`);
  else if (state === 'unencrypted') ctx.out.line('not encrypted, as chosen: backups are stored in plaintext (`lifeboat encryption init` to change that)');
  else ctx.out.line('not chosen yet: no backup runs until `lifeboat encryption init --passphrase-file FILE` (recommended) or `lifeboat encryption off`');
  return EXIT_OK;
}

// ── plans ─────────────────────────────────────────────────────────────────────

function addPlanCommands(program: Command, ctx: Context, run: Run): void {
  const plan = program.command('plan').description('backup plans: what to back up, from which agent, when, and how long to keep it');
  plan
    .command('apply')
    .description('create or update the plans in a YAML or JSON plan file (checked locally first, then by the server)')
    .argument('<file>', 'a .yaml, .yml or .json file with a top-level "plans" list')
    .addHelpText('after', example('lifeboat plan apply plans.yaml'))
    .action((file: string) => run(() => applyPlans(ctx, file)));
  plan
    .command('list')
    .description('list plans')
    .option('--json', 'print the plans as JSON')
    .action((opts: { json?: boolean }) => run(() => listPlans(ctx, opts.json === true)));
  plan
    .command('show')
    .description('show one plan as YAML (the shape plan apply reads), or as JSON')
    .argument('<id>', 'plan id')
    .option('--json', 'print the plan as JSON')
    .addHelpText('after', example('lifeboat plan show chatwoot-prod'))
    .action((id: string, opts: { json?: boolean }) => run(() => showPlan(ctx, id, opts.json === true)));
  plan
    .command('delete')
    .description('delete a plan; its snapshots stay in the store')
    .argument('<id>', 'plan id')
    .addHelpText('after', example('lifeboat plan delete old-plan'))
    .action((id: string) => run(() => deletePlan(ctx, id)));
}

type PlanFileRead = { ok: true; data: unknown } | { ok: false; problems: string[] };

/** Reads a plan file into plain data; YAML and JSON are both accepted, told apart by extension. */
export function parsePlanText(file: string, text: string): PlanFileRead {
  const ext = extname(file).toLowerCase();
  if (ext === '.json') {
    try {
      return { ok: true, data: JSON.parse(text) as unknown };
    } catch (err) {
      return { ok: false, problems: [`not valid JSON: ${err instanceof Error ? err.message : String(err)}`] };
    }
  }
  if (ext === '.yaml' || ext === '.yml') {
    const doc = parseDocument(text, { prettyErrors: true });
    // The first line of a YAML error says what and where; the rest is a code excerpt.
    if (doc.errors.length) return { ok: false, problems: doc.errors.map((e) => (e.message.split('\n')[0] ?? e.message).replace(/:$/, '')) };
    return { ok: true, data: doc.toJS() as unknown };
  }
  throw new UsageError(`cannot tell the format of "${file}": name it .yaml, .yml or .json`);
}

async function readPlanFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new LifeboatError('path_not_found', `cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? String(err))}`);
  }
}

async function applyPlans(ctx: Context, file: string): Promise<number> {
  const read = parsePlanText(file, await readPlanFile(file));
  if (!read.ok) return reportPlanProblems(ctx, file, read.problems);
  const problems = planProblems(read.data);
  if (problems.length) return reportPlanProblems(ctx, file, problems);
  const result = await client(ctx).applyPlans(read.data);
  ctx.out.lines(applySummary(result));
  return EXIT_OK;
}

/** Every problem at once, so a long file is fixed in one pass; nothing has been sent to the server. */
function reportPlanProblems(ctx: Context, file: string, problems: string[]): number {
  ctx.err.line(`${file} is not a valid plan file (${problems.length} problem${problems.length === 1 ? '' : 's'}):`);
  ctx.err.lines(problems.map((p) => `  ${p}`));
  return EXIT_FAILED;
}

function planProblems(data: unknown): string[] {
  const parsed = parsePlanFile(data);
  return parsed.ok ? [] : parsed.problems;
}

async function listPlans(ctx: Context, json: boolean): Promise<number> {
  const plans = await client(ctx).listPlans();
  if (json) ctx.out.json(plans);
  else if (plans.length === 0) ctx.err.line('no plans yet; create some with: lifeboat plan apply plans.yaml');
  else ctx.out.lines(planTable(plans));
  return EXIT_OK;
}

async function showPlan(ctx: Context, id: string, json: boolean): Promise<number> {
  const view = await client(ctx).getPlan(id);
  if (json) ctx.out.json(view);
  else ctx.out.lines(planYaml(view));
  return EXIT_OK;
}

async function deletePlan(ctx: Context, id: string): Promise<number> {
  const deleted = await client(ctx).deletePlan(id);
  ctx.out.line(`deleted plan ${deleted}`);
  return EXIT_OK;
}

// ── backup ────────────────────────────────────────────────────────────────────

function addBackupCommands(program: Command, ctx: Context, run: Run): void {
  const backup = program.command('backup').description('run backups outside their schedule');
  backup
    .command('now')
    .description('queue a backup of a plan now; with --wait, follow it and exit non-zero unless it succeeds')
    .argument('<plan>', 'plan id')
    .option('--wait', 'wait for the job to finish, showing progress on stderr')
    .addHelpText('after', example('lifeboat backup now chatwoot-prod --wait'))
    .action((plan: string, opts: { wait?: boolean }) => run(() => backupNow(ctx, plan, opts.wait === true)));
}

async function backupNow(ctx: Context, planId: string, wait: boolean): Promise<number> {
  const api = client(ctx);
  const job = await api.backupNow(planId);
  ctx.out.line(`queued backup job ${job.id} for plan ${planId} on agent ${job.agentName}`);
  if (!wait) {
    ctx.err.line(`follow it with: lifeboat jobs show ${job.id}`);
    return EXIT_OK;
  }
  return followJob(ctx, api, job);
}

/** Polls a job to its end, drawing progress on stderr, then prints how it ended; 1 unless it succeeded. */
async function followJob(ctx: Context, api: ApiClient, job: JobView): Promise<number> {
  ctx.err.line(`waiting for ${job.id} (Ctrl-C stops waiting; the job goes on on the server)`);
  const draw = progressDrawer(ctx);
  const final = await waitForJob(api, job.id, { sleep: ctx.sleep, intervalMs: ctx.pollIntervalMs, onPoll: draw.update });
  draw.done();
  const outcome = jobOutcome(final);
  (outcome.ok ? ctx.out : ctx.err).lines(outcome.lines);
  return outcome.ok ? EXIT_OK : EXIT_FAILED;
}

/**
 * On a terminal the progress line is redrawn in place; in a log (not a TTY) a line is written
 * only when the status or phase changes, or every 10 s, so CI logs stay readable.
 */
function progressDrawer(ctx: Context): { update: (job: JobView) => void; done: () => void } {
  const tracker = new ProgressTracker(ctx.now());
  const tty = ctx.err.isTTY;
  let drawn = false;
  let lastKey = '';
  let lastAt = 0;
  return {
    update: (job) => {
      // The outcome is printed separately; a last "failed" progress line would only repeat it.
      if (isFinished(job)) return;
      const line = tracker.line(job, ctx.now());
      if (tty) {
        ctx.err.raw(`\r\x1b[2K${line}`);
        drawn = true;
        return;
      }
      const key = `${job.status}/${job.progress?.phase ?? ''}`;
      if (key !== lastKey || ctx.now() - lastAt >= 10_000) {
        ctx.err.line(line);
        lastKey = key;
        lastAt = ctx.now();
      }
    },
    done: () => {
      if (drawn) ctx.err.raw('\n');
    },
  };
}

// ── jobs ──────────────────────────────────────────────────────────────────────

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('a whole number of at least 1');
  return n;
}

function addJobCommands(program: Command, ctx: Context, run: Run): void {
  const jobs = program.command('jobs').description('backup and restore jobs');
  jobs
    .command('list')
    .description('list jobs, newest first')
    .option('--plan <id>', 'only this plan\'s jobs')
    .option('--agent <name>', 'only this agent\'s jobs')
    .addOption(new Option('--status <status>', 'only jobs in this status').choices(JobStatus.options))
    .option('--limit <n>', 'at most this many jobs', positiveInt)
    .option('--json', 'print the jobs as JSON')
    .addHelpText('after', example('lifeboat jobs list --plan chatwoot-prod --status failed --limit 5'))
    .action((opts: { plan?: string; agent?: string; status?: JobStatus; limit?: number; json?: boolean }) =>
      run(() => listJobs(ctx, opts)),
    );
  jobs
    .command('show')
    .description('show a job: status, progress, error, warnings and summary')
    .argument('<id>', 'job id')
    .option('--json', 'print the job as JSON')
    .addHelpText('after', example('lifeboat jobs show job_3kq9x2m7tbw4hz8cya5e'))
    .action((id: string, opts: { json?: boolean }) => run(() => showJob(ctx, id, opts.json === true)));
}

async function listJobs(ctx: Context, opts: { plan?: string; agent?: string; status?: JobStatus; limit?: number; json?: boolean }): Promise<number> {
  const { json, ...filter } = opts;
  const jobs = await client(ctx).listJobs(filter);
  if (json) ctx.out.json(jobs);
  else if (jobs.length === 0) ctx.err.line('no jobs match');
  else ctx.out.lines(jobTable(jobs));
  return EXIT_OK;
}

async function showJob(ctx: Context, id: string, json: boolean): Promise<number> {
  const job = await client(ctx).getJob(id);
  if (json) ctx.out.json(job);
  else ctx.out.lines(jobDetails(job));
  return EXIT_OK;
}

// ── snapshots ─────────────────────────────────────────────────────────────────

function addSnapshotCommands(program: Command, ctx: Context, run: Run): void {
  const snapshots = program.command('snapshots').description('completed backups, each restorable');
  snapshots
    .command('list')
    .description('list snapshots, newest first')
    .option('--plan <id>', 'only this plan\'s snapshots')
    .option('--agent <name>', 'only snapshots taken from this agent')
    .option('--json', 'print the snapshots as JSON')
    .addHelpText('after', example('lifeboat snapshots list --plan chatwoot-prod'))
    .action((opts: { plan?: string; agent?: string; json?: boolean }) => run(() => listSnapshots(ctx, opts)));
  snapshots
    .command('show')
    .description('show a snapshot and its artifacts (size, chunks, SHA-256, contents)')
    .argument('<id>', 'snapshot id')
    .option('--json', 'print the snapshot as JSON')
    .action((id: string, opts: { json?: boolean }) => run(() => showSnapshot(ctx, id, opts.json === true)));
}

async function listSnapshots(ctx: Context, opts: { plan?: string; agent?: string; json?: boolean }): Promise<number> {
  const { json, ...filter } = opts;
  const snapshots = await client(ctx).listSnapshots(filter);
  if (json) ctx.out.json(snapshots);
  else if (snapshots.length === 0) ctx.err.line('no snapshots match');
  else ctx.out.lines(snapshotTable(snapshots));
  return EXIT_OK;
}

async function showSnapshot(ctx: Context, id: string, json: boolean): Promise<number> {
  const snapshot = await client(ctx).getSnapshot(id);
  if (json) ctx.out.json(snapshot);
  else ctx.out.lines(snapshotDetails(snapshot));
  return EXIT_OK;
}

// ── stats ─────────────────────────────────────────────────────────────────────

function addStatsCommand(program: Command, ctx: Context, run: Run): void {
  program
    .command('stats')
    .description('what the store holds: bytes backed up, bytes stored, and the ratio (deduplication and compression), per plan and in total')
    .option('--json', 'print the figures as JSON')
    .addHelpText('after', example('lifeboat stats'))
    .action((opts: { json?: boolean }) => run(() => showStats(ctx, opts.json === true)));
}

async function showStats(ctx: Context, json: boolean): Promise<number> {
  const stats = await client(ctx).stats();
  if (json) ctx.out.json(stats);
  else if (stats.plans.length === 0) ctx.err.line('no plans and no snapshots yet');
  else ctx.out.lines(statsTable(stats));
  return EXIT_OK;
}

// ── restore ───────────────────────────────────────────────────────────────────

interface RestoreFlags {
  agent: string;
  to?: string;
  toPostgres?: string;
  toMysql?: string;
  passwordFile?: string;
  force?: boolean;
  artifact: number[];
  rewriteHost: { from: string; to: string }[];
}

function addRestoreCommand(program: Command, ctx: Context, run: Run): void {
  program
    .command('restore')
    .description('restore a snapshot on an agent (files into a directory, dumps into a database), wait for it, and print its summary')
    .argument('<snapshot>', 'snapshot id')
    .requiredOption('--agent <name>', 'the agent that restores (need not be the one that was backed up)')
    .option('--to <dir>', 'absolute path of the target directory on that agent (files, SQLite, and dumps without a database target)')
    .option('--to-postgres <url>', 'restore PostgreSQL dumps into this database, postgres://user@host:port/db (created if missing)')
    .option('--to-mysql <url>', 'restore MySQL/MariaDB dumps into this database, mysql://user@host:port/db (created if missing)')
    .option('--password-file <file>', 'for --to-postgres/--to-mysql: a file on the agent holding the password')
    .option('--force', 'restore into a directory or database that is not empty')
    .option('--artifact <n>', 'restore only this artifact (index from 0; repeatable)', (v: string, prev: number[]) => [...prev, parseIndex(v)], [] as number[])
    .option('--rewrite-host <old=new>', 'pydio-cells: replace a host in the restored configuration (repeatable)', (v: string, prev: { from: string; to: string }[]) => [...prev, parseRewrite(v)], [] as { from: string; to: string }[])
    .addHelpText(
      'after',
      example('lifeboat restore snap_7hx2m4q9ce3kwz5tbn8a --agent web-1 --to /srv/restore') +
        example("lifeboat restore snap_7hx2m4q9ce3kwz5tbn8a --agent db-2 --to-postgres 'postgres://postgres@127.0.0.1:5432/chatwoot_restored' --to /srv/restore"),
    )
    .action((snapshot: string, opts: RestoreFlags) => run(() => restore(ctx, snapshot, opts)));
}

/** The parsing is shared with restore-from-store; here a bad value is a usage error. */
function asUsage<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  };
}
const parseIndex = asUsage(parseArtifactIndex);
const parseRewrite = asUsage(parseHostRewrite);

/** A database target from its URL (no password in it) and the password file on the agent. */
export function databaseUrl(flag: '--to-postgres' | '--to-mysql', url: string, passwordFile?: string) {
  const location = asUsage((u: string) => parseDatabaseUrl(flag === '--to-postgres' ? 'postgres' : 'mysql', u))(url);
  return { ...location, ...(passwordFile ? { passwordFile } : {}) };
}

/** Zod paths of a RestoreRequest, as the user typed them. */
const RESTORE_FIELDS: Record<string, string> = { snapshotId: 'SNAPSHOT', agent: '--agent', to: '--to', toPostgres: '--to-postgres', toMysql: '--to-mysql', force: '--force' };

async function restore(ctx: Context, snapshotId: string, opts: RestoreFlags): Promise<number> {
  if (!opts.to && !opts.toPostgres && !opts.toMysql) throw new UsageError('give where to restore: --to DIR, --to-postgres URL and/or --to-mysql URL');
  if (opts.passwordFile && !opts.toPostgres && !opts.toMysql) throw new UsageError('--password-file goes with --to-postgres or --to-mysql');
  const request = {
    snapshotId,
    agent: opts.agent,
    force: opts.force === true,
    ...(opts.to ? { to: opts.to } : {}),
    ...(opts.toPostgres ? { toPostgres: databaseUrl('--to-postgres', opts.toPostgres, opts.passwordFile) } : {}),
    ...(opts.toMysql ? { toMysql: databaseUrl('--to-mysql', opts.toMysql, opts.passwordFile) } : {}),
    ...(opts.artifact.length ? { artifacts: opts.artifact } : {}),
    rewriteHosts: opts.rewriteHost,
  };
  const parsed = RestoreRequest.safeParse(request);
  if (!parsed.success) {
    const problems = listIssues(parsed.error).map((line) => line.replace(/^(\w+)/, (field) => RESTORE_FIELDS[field] ?? field));
    throw new UsageError('invalid restore request:', problems);
  }
  const api = client(ctx);
  const job = await api.restore(parsed.data);
  const where = [opts.to, opts.toPostgres, opts.toMysql].filter(Boolean).join(' and ');
  ctx.out.line(`queued restore job ${job.id}: snapshot ${snapshotId} into ${where} on agent ${job.agentName}`);
  return followJob(ctx, api, job);
}

// ── errors ────────────────────────────────────────────────────────────────────

/** One place turns every failure into lines on stderr and an exit code; nothing ever prints the token. */
function reportError(err: unknown, ctx: Context): number {
  // Commander has already printed its own message (or the help).
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (err instanceof UsageError) {
    ctx.err.line(`error: ${err.message}`);
    ctx.err.lines(err.details.map((d) => `  ${d}`));
    return EXIT_USAGE;
  }
  if (err instanceof ServerUnreachableError) {
    ctx.err.line(err.message);
    return EXIT_FAILED;
  }
  if (err instanceof ApiRequestError && err.status === 401) {
    ctx.err.line('the server refused the admin token (401); check --token / LIFEBOAT_TOKEN');
    return EXIT_FAILED;
  }
  if (err instanceof LifeboatError) {
    ctx.err.line(`error: ${err.message}`);
    ctx.err.lines((err.details ?? []).map((d) => `  ${d}`));
    return EXIT_FAILED;
  }
  // Anything else is a bug in this CLI: say so rather than dress it up as a server answer.
  ctx.err.line(`internal error: ${err instanceof Error ? err.message : String(err)}`);
  return EXIT_FAILED;
}

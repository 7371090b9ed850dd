import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import {
  formatBytes,
  formatDuration,
  LifeboatError,
  MysqlTarget,
  PostgresTarget,
  type ArtifactForRestore,
  type ChunkKeys,
  type DirTarget,
  type DrillCheck,
  type DrillCheckResult,
  type DrillReport,
  type PayloadOf,
  type RestoreTarget,
  type ServerMessages,
  type WireError,
} from '@lifeboat/shared';
import { abortReason } from '../fs-errors.js';
import type { ServerLink } from '../link.js';
import { sourceFor } from '../sources/registry.js';
import type { JobContext, RestoreSummary } from '../sources/source.js';
import { checkManifest, checkResult, clip, describeTables, runCommandCheck, runSqlCheck, type SqlTarget } from './checks.js';
import { fetchArtifact, type FetchOutcome } from './fetch.js';
import { DrillScratch, neededPostgresMajor } from './scratch-targets.js';

/**
 * A restore drill on this agent (DESIGN §7): every artifact of the snapshot fetched and verified chunk by chunk,
 * restored into scratch (a throwaway PostgreSQL cluster, a throwaway MariaDB, a scratch directory) by its own
 * source, which compares what it restored with what was recorded at backup; then the plan's own checks; then
 * everything torn down, whatever happened. Every check is reported, passed or failed; the drill passes only
 * when all of them do. The restore time (the RTO) runs from the first chunk requested to the last artifact
 * restored, without the time spent starting scratch servers.
 */

export type DrillJob = PayloadOf<typeof ServerMessages, 'job.drill'>;

export interface DrillSettings {
  /** Where scratch directories go; default the system temp dir (where cleanLeftoverScratch looks at start). */
  scratchParent?: string;
  /** A plan `command` check is stopped after this long. */
  commandTimeoutMs?: number;
  /** A plan `sql` check is stopped after this long. */
  sqlTimeoutMs?: number;
}

export interface DrillDeps {
  link: ServerLink;
  keys: ChunkKeys | null;
  settings?: DrillSettings;
}

export interface DrillOutcome {
  /** True only when every check passed. */
  ok: boolean;
  summary: string;
  report: DrillReport;
  /** When not ok: restore_failed, "<n> of <m> checks failed: …". */
  error?: WireError;
}

const DEFAULT_CHECK_TIMEOUT_MS = 10 * 60_000;

/** What the drill restored, for the plan's checks to use. */
interface Restored {
  postgres: Extract<SqlTarget, { kind: 'postgres' }>[];
  mysql: Extract<SqlTarget, { kind: 'mysql' }>[];
  sqlite: string[];
  /** Each files artifact's first archived path, as restored. */
  filesRoots: string[];
}

interface ArtifactResult {
  checks: DrillCheckResult[];
}

/**
 * Runs the drill and reports it. Resolves with the outcome, passed or failed; rejects only when the job is
 * cancelled (with the signal's reason), after the teardown.
 */
export async function runDrill(job: DrillJob, ctx: JobContext, deps: DrillDeps): Promise<DrillOutcome> {
  const settings = deps.settings ?? {};
  const postgresMajor = neededPostgresMajor(job.artifacts);
  const scratch = new DrillScratch({
    ...(settings.scratchParent !== undefined ? { parentDir: settings.scratchParent } : {}),
    ...(postgresMajor !== undefined ? { postgresMajor } : {}),
    log: ctx.log,
  });
  const restored: Restored = { postgres: [], mysql: [], sqlite: [], filesRoots: [] };
  const drill = new ArtifactDrill(ctx, deps, scratch, restored);
  const checks: DrillCheckResult[] = [];
  ctx.log.info(`drill ${job.drillId} of plan ${job.planId}, snapshot ${job.snapshotId}: ${job.artifacts.length} artifact(s), ${job.checks.length} plan check(s)`);
  try {
    const began = Date.now();
    let bytesRestored = 0;
    let allRestored = true;
    for (const [index, artifact] of job.artifacts.entries()) {
      if (ctx.signal.aborted) throw abortReason(ctx.signal);
      ctx.progress(`drill: restoring artifact ${index + 1} of ${job.artifacts.length} into scratch`, bytesRestored);
      const result = await drill.run(artifact);
      checks.push(...result.checks);
      if (result.checks.every((c) => c.ok)) bytesRestored += artifact.size;
      else allRestored = false;
    }
    const restoreMs = Math.max(0, Date.now() - began - scratch.startupMs);

    for (const check of job.checks) {
      if (ctx.signal.aborted) throw abortReason(ctx.signal);
      ctx.progress('drill: running the plan\'s checks', bytesRestored);
      checks.push(allRestored ? await runPlanCheck(check, restored, scratch, ctx, settings) : notRun(check));
    }
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    return outcome(checks, { restoreMs, bytesRestored, checks }, job.artifacts.length);
  } finally {
    const problems = await scratch.teardown();
    if (problems.length > 0) ctx.warn(`the drill's scratch could not be removed completely (the agent removes it at its next start): ${problems.join('; ')}`);
    else ctx.log.info('drill scratch torn down');
  }
}

function outcome(checks: DrillCheckResult[], report: DrillReport, artifacts: number): DrillOutcome {
  const failed = checks.filter((c) => !c.ok);
  const restoredText = `restored ${formatBytes(report.bytesRestored)} in ${formatDuration(report.restoreMs)}`;
  if (failed.length === 0) {
    return { ok: true, summary: `drill passed: ${checks.length} checks on ${artifacts} artifact(s); ${restoredText}`, report };
  }
  const head = `${failed.length} of ${checks.length} checks failed`;
  return {
    ok: false,
    summary: clip(`drill failed: ${head}: ${failed.map((c) => c.name).join('; ')}`, 4000),
    report,
    error: { code: 'restore_failed', message: clip(`${head}: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`, 4000) },
  };
}

function planCheckName(check: DrillCheck): string {
  return 'sql' in check ? `sql: ${check.sql.replace(/\s+/g, ' ').trim()}` : `command: ${check.command.join(' ')}`;
}

function notRun(check: DrillCheck): DrillCheckResult {
  return checkResult(planCheckName(check), false, 'not run: not every artifact was restored and checked (see the failed checks above)');
}

async function runPlanCheck(check: DrillCheck, restored: Restored, scratch: DrillScratch, ctx: JobContext, settings: DrillSettings): Promise<DrillCheckResult> {
  const name = planCheckName(check);
  if ('sql' in check) {
    // The restored PostgreSQL database if there is one, else MariaDB, else SQLite: the first restored of its kind.
    const target: SqlTarget | undefined =
      restored.postgres[0] ?? restored.mysql[0] ?? (restored.sqlite[0] !== undefined ? { kind: 'sqlite', file: restored.sqlite[0] } : undefined);
    if (!target) return checkResult(name, false, 'the drill restored no database (PostgreSQL, MariaDB or SQLite) to run it in');
    const result = await runSqlCheck(check.sql, target, { signal: ctx.signal, timeoutMs: settings.sqlTimeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS });
    return checkResult(name, result.ok, result.detail);
  }
  const cwd = restored.filesRoots[0] ?? (await scratch.dir());
  const result = await runCommandCheck(check.command, cwd, await checkEnvironment(restored, scratch), {
    signal: ctx.signal,
    timeoutMs: settings.commandTimeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS,
  });
  return checkResult(name, result.ok, result.detail);
}

/** Where a command check finds the scratch databases: no passwords (the scratch servers trust local clients). */
async function checkEnvironment(restored: Restored, scratch: DrillScratch): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  const dir = await scratch.startedDir();
  if (dir) env.LIFEBOAT_DRILL_DIR = dir;
  if (restored.filesRoots[0]) env.LIFEBOAT_DRILL_FILES = restored.filesRoots[0];
  const pg = restored.postgres[0];
  if (pg) {
    Object.assign(env, {
      LIFEBOAT_DRILL_PG_URL: `postgresql://postgres@127.0.0.1:${pg.port}/${encodeURIComponent(pg.database)}`,
      LIFEBOAT_DRILL_PG_HOST: '127.0.0.1',
      LIFEBOAT_DRILL_PG_PORT: String(pg.port),
      LIFEBOAT_DRILL_PG_USER: 'postgres',
      LIFEBOAT_DRILL_PG_DATABASE: pg.database,
      LIFEBOAT_DRILL_PG_SOCKET_DIR: pg.socketDir,
      // So that psql and other libpq programs reach the scratch database with no options.
      PGHOST: '127.0.0.1',
      PGPORT: String(pg.port),
      PGUSER: 'postgres',
      PGDATABASE: pg.database,
    });
  }
  const mysql = restored.mysql[0];
  if (mysql) {
    Object.assign(env, {
      LIFEBOAT_DRILL_MYSQL_URL: `mysql://root@127.0.0.1:${mysql.port}/${encodeURIComponent(mysql.database)}`,
      LIFEBOAT_DRILL_MYSQL_HOST: '127.0.0.1',
      LIFEBOAT_DRILL_MYSQL_PORT: String(mysql.port),
      LIFEBOAT_DRILL_MYSQL_SOCKET: mysql.socket,
      LIFEBOAT_DRILL_MYSQL_USER: 'root',
      LIFEBOAT_DRILL_MYSQL_DATABASE: mysql.database,
    });
  }
  if (restored.sqlite[0]) env.LIFEBOAT_DRILL_SQLITE = restored.sqlite[0];
  return env;
}

// ── one artifact ────────────────────────────────────────────────────────────────

interface RestoreAttempt {
  fetched: FetchOutcome;
  result?: RestoreSummary;
  failure?: LifeboatError;
}

/** Restores artifacts one at a time into the drill's scratch, each with its checks. */
class ArtifactDrill {
  private readonly pgDatabases = new Set<string>();
  private readonly mysqlDatabases = new Set<string>();

  constructor(
    private readonly ctx: JobContext,
    private readonly deps: DrillDeps,
    private readonly scratch: DrillScratch,
    private readonly restored: Restored,
  ) {}

  async run(artifact: ArtifactForRestore): Promise<ArtifactResult> {
    const label = clip(`${artifact.kind} ${artifact.name}`, 200);
    if (artifact.metadata.kind !== artifact.kind) {
      return { checks: [checkResult(`${label}: chunks and stream verified`, false, `not fetched: the artifact is a ${artifact.kind} artifact, but its metadata describes a ${artifact.metadata.kind} one`)] };
    }
    try {
      switch (artifact.kind) {
        case 'postgres':
          return await this.postgres(artifact, label);
        case 'mysql':
          return await this.mysql(artifact, label);
        case 'sqlite':
          return await this.sqlite(artifact, label);
        case 'files':
          return await this.files(artifact, label);
        case 'command':
          return await this.command(artifact, label);
        case 'postgres-globals':
          return await this.globals(artifact, label);
      }
    } catch (err) {
      // Reached only when no restore ran (a scratch server would not start): the artifact was not fetched.
      if (this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
      const message = err instanceof LifeboatError ? err.message : `the drill failed: ${err instanceof Error ? err.message : String(err)}`;
      return {
        checks: [
          checkResult(`${label}: chunks and stream verified`, false, `not fetched: there was nowhere to restore it (${message})`),
          checkResult(`${label}: ${contentCheckName(artifact)}`, false, message),
        ],
      };
    }
  }

  private async postgres(artifact: ArtifactForRestore, label: string): Promise<ArtifactResult> {
    const metadata = artifact.metadata as Extract<ArtifactForRestore['metadata'], { kind: 'postgres' }>;
    const server = await this.scratch.postgres();
    const database = unique(metadata.database, this.pgDatabases);
    // The socket in the scratch directory, not a TCP port: nothing but the drill's own server can answer there.
    const parsed = PostgresTarget.safeParse({ kind: 'postgres', host: server.socketDir, port: server.port, user: 'postgres', database, force: false });
    if (!parsed.success) return { checks: unusableName(artifact, label, metadata.database) };
    const attempt = await this.restore(artifact, parsed.data);
    const checks = [this.fetchCheck(artifact, label, attempt), this.contentCheck(label, 'tables and row counts', attempt, describeTables(metadata.tables))];
    if (checks.every((c) => c.ok)) this.restored.postgres.push({ kind: 'postgres', socketDir: server.socketDir, port: server.port, database });
    return { checks };
  }

  /**
   * The mysql source restores one database per target: a dump of one database goes in under its own name; a
   * dump of several is restored once per database (each a fetch of the artifact and a check of its own).
   */
  private async mysql(artifact: ArtifactForRestore, label: string): Promise<ArtifactResult> {
    const metadata = artifact.metadata as Extract<ArtifactForRestore['metadata'], { kind: 'mysql' }>;
    const server = await this.scratch.mariadb();
    const single = metadata.databases.length === 1;
    const content: DrillCheckResult[] = [];
    let fetched: DrillCheckResult | undefined;
    let damaged = false;
    for (const recorded of metadata.databases) {
      const checkName = single ? 'tables and row counts' : `database ${recorded.name}: tables and row counts`;
      // A damaged artifact is damaged for every database in it: no point fetching it again.
      if (damaged) {
        content.push(checkResult(`${label}: ${checkName}`, false, 'not checked: the artifact could not be fetched intact'));
        continue;
      }
      // A several-database dump restores each database under its own name only.
      if (!single && this.mysqlDatabases.has(recorded.name)) {
        content.push(checkResult(`${label}: ${checkName}`, false, `not restored: another artifact of this snapshot already restored a database named ${recorded.name} into the scratch MariaDB`));
        continue;
      }
      const database = single ? unique(recorded.name, this.mysqlDatabases) : recorded.name;
      this.mysqlDatabases.add(database);
      const parsed = MysqlTarget.safeParse({ kind: 'mysql', host: server.socket, port: server.port, user: 'root', database, force: false });
      if (!parsed.success) {
        content.push(checkResult(`${label}: ${checkName}`, false, `not restored: the recorded database name ${JSON.stringify(recorded.name)} cannot be used as a restore target`));
        continue;
      }
      const attempt = await this.restore(artifact, parsed.data);
      const fetchCheck = this.fetchCheck(artifact, label, attempt);
      if (!fetched || (fetched.ok && !fetchCheck.ok)) fetched = fetchCheck;
      const check = this.contentCheck(label, checkName, attempt, describeTables(recorded.tables));
      content.push(check);
      if (check.ok && fetchCheck.ok) this.restored.mysql.push({ kind: 'mysql', socket: server.socket, port: server.port, database });
      damaged = attempt.fetched.state === 'failed';
    }
    return { checks: [fetched ?? checkResult(`${label}: chunks and stream verified`, false, 'not fetched: no database of the artifact could be restored'), ...content] };
  }

  private async sqlite(artifact: ArtifactForRestore, label: string): Promise<ArtifactResult> {
    const metadata = artifact.metadata as Extract<ArtifactForRestore['metadata'], { kind: 'sqlite' }>;
    const dir = await this.scratch.dirTarget(`sqlite-${artifact.step}`);
    const attempt = await this.restore(artifact, dirTarget(dir));
    const checks = [this.fetchCheck(artifact, label, attempt), this.contentCheck(label, 'integrity_check and row counts', attempt, describeTables(metadata.tables))];
    if (checks.every((c) => c.ok)) {
      // The restored file is the only entry of its fresh directory.
      const [file] = (await readdir(dir).catch(() => [] as string[])).filter((name) => !name.startsWith('.'));
      if (file) this.restored.sqlite.push(path.posix.join(dir, file));
    }
    return { checks };
  }

  private async files(artifact: ArtifactForRestore, label: string): Promise<ArtifactResult> {
    const metadata = artifact.metadata as Extract<ArtifactForRestore['metadata'], { kind: 'files' }>;
    const dir = await this.scratch.dirTarget(`files-${artifact.step}`);
    // Beside the restored tree, not in it: the backup's per-file manifest, for the manifest check.
    const manifestFile = metadata.manifest ? `${await this.scratch.dirTarget(`manifest-${artifact.step}`)}.jsonl` : undefined;
    const attempt = await this.restore(artifact, dirTarget(dir), manifestFile);
    const fetched = this.fetchCheck(artifact, label, attempt);
    const manifestName = `${label}: manifest`;
    let manifest: DrillCheckResult;
    if (attempt.fetched.state === 'failed') {
      manifest = checkResult(manifestName, false, 'not checked: the artifact could not be fetched intact');
    } else if (!attempt.result) {
      manifest = checkResult(manifestName, false, `the restore failed: ${attempt.failure?.message ?? 'unknown reason'}`);
    } else {
      const compared = await checkManifest(dir, metadata, attempt.result.skipped, this.ctx.signal, manifestFile);
      manifest = checkResult(manifestName, compared.ok, compared.detail);
    }
    if (fetched.ok && manifest.ok && metadata.paths[0] !== undefined) {
      // The first archived path as restored; a single archived file's directory, for a command check to run in.
      const root = path.posix.join(dir, metadata.paths[0]);
      const isDirectory = await stat(root).then((info) => info.isDirectory(), () => false);
      this.restored.filesRoots.push(isDirectory ? root : path.posix.dirname(root));
    }
    return { checks: [fetched, manifest] };
  }

  /** The output of a backup command, restored as a file: its own restore command is not run by a drill. */
  private async command(artifact: ArtifactForRestore, label: string): Promise<ArtifactResult> {
    const dir = await this.scratch.dirTarget(`command-${artifact.step}`);
    const attempt = await this.restore(artifact, dirTarget(dir));
    return { checks: [this.fetchCheck(artifact, label, attempt, 'written as a file of the recorded size; a drill does not run the step\'s restore command')] };
  }

  /** Roles are server-wide (passwords, superuser rights): a drill checks that they fetch intact, and applies nothing. */
  private async globals(artifact: ArtifactForRestore, label: string): Promise<ArtifactResult> {
    const metadata = artifact.metadata as Extract<ArtifactForRestore['metadata'], { kind: 'postgres-globals' }>;
    const fetch = fetchArtifact(this.deps.link, artifact, this.ctx, this.deps.keys);
    const attempt: RestoreAttempt = { fetched: { state: 'unfinished' } };
    try {
      fetch.stream.resume();
      await finished(fetch.stream);
    } catch {
      if (this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
    }
    attempt.fetched = fetch.outcome();
    const roles = `${metadata.roles.length} role${metadata.roles.length === 1 ? '' : 's'}`;
    return { checks: [this.fetchCheck(artifact, label, attempt, `not applied: PostgreSQL globals (${roles}) are server-wide, so a drill only checks that they fetch intact`)] };
  }

  /** One fetch and one restore by the artifact's own source; an aborted job rejects, any other failure is kept. */
  private async restore(artifact: ArtifactForRestore, target: RestoreTarget, keepManifestAt?: string): Promise<RestoreAttempt> {
    const source = await sourceFor(artifact.kind);
    const fetch = fetchArtifact(this.deps.link, artifact, this.ctx, this.deps.keys);
    let result: RestoreSummary | undefined;
    let failure: LifeboatError | undefined;
    try {
      result = await source.restore(fetch.stream, target, { preserveOwner: false, artifact, ...(keepManifestAt ? { keepManifestAt } : {}) }, this.ctx);
      // Every chunk is verified, even those a restore had no need to read.
      if (!fetch.stream.readableEnded && !fetch.stream.destroyed) {
        fetch.stream.resume();
        await finished(fetch.stream).catch(() => {});
      }
    } catch (err) {
      fetch.stream.destroy();
      if (this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
      failure = err instanceof LifeboatError ? err : new LifeboatError('restore_failed', `the restore failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    // The download's own error event comes on the next tick after it failed.
    await new Promise((resolve) => setImmediate(resolve));
    const fetched = fetch.outcome();
    if (fetched.state === 'failed' && fetched.error.code === 'cancelled' && this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
    return { fetched, ...(result ? { result } : {}), ...(failure ? { failure } : {}) };
  }

  /** "chunks and stream verified": the download's verdict; for artifacts without a content check, the restore's too. */
  private fetchCheck(artifact: ArtifactForRestore, label: string, attempt: RestoreAttempt, note?: string): DrillCheckResult {
    const name = `${label}: chunks and stream verified`;
    const { fetched } = attempt;
    if (fetched.state === 'failed') return checkResult(name, false, fetched.error.message);
    if (fetched.state === 'unfinished') {
      return checkResult(name, false, `not verified to the end: the restore stopped reading first${attempt.failure ? ` (${attempt.failure.message})` : ''}`);
    }
    const verified = `${artifact.chunks.length} chunk${artifact.chunks.length === 1 ? '' : 's'} fetched, each decoded and matching its id, in the order their recorded digest pins; ${formatBytes(artifact.size)} in all`;
    if (note !== undefined && attempt.failure) return checkResult(name, false, `${verified}, but the restore failed: ${attempt.failure.message}`);
    return checkResult(name, true, note ? `${verified}; ${note}` : verified);
  }

  /** The source's own comparison with what was recorded (row counts, integrity): passed when its restore did. */
  private contentCheck(label: string, what: string, attempt: RestoreAttempt, recorded: string): DrillCheckResult {
    const name = `${label}: ${what}`;
    if (attempt.fetched.state === 'failed') return checkResult(name, false, 'not checked: the artifact could not be fetched intact');
    if (!attempt.result) return checkResult(name, false, attempt.failure?.message ?? 'the restore failed');
    return checkResult(name, true, `${attempt.result.summary}; recorded at backup: ${recorded}`);
  }
}

function contentCheckName(artifact: ArtifactForRestore): string {
  switch (artifact.kind) {
    case 'postgres':
    case 'mysql':
      return 'tables and row counts';
    case 'sqlite':
      return 'integrity_check and row counts';
    case 'files':
      return 'manifest';
    default:
      return 'restore';
  }
}

function dirTarget(dir: string): DirTarget {
  return { kind: 'dir', path: dir, force: false };
}

/** The name, or the name with a suffix when an earlier artifact of this drill already took it. */
function unique(name: string, taken: Set<string>): string {
  let candidate = name;
  for (let n = 2; taken.has(candidate); n++) candidate = `${name}_drill${n}`;
  taken.add(candidate);
  return candidate;
}

function unusableName(artifact: ArtifactForRestore, label: string, database: string): DrillCheckResult[] {
  const message = `the recorded database name ${JSON.stringify(database)} cannot be used as a restore target`;
  return [
    checkResult(`${label}: chunks and stream verified`, false, `not fetched: ${message}`),
    checkResult(`${label}: ${contentCheckName(artifact)}`, false, message),
  ];
}

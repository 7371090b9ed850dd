import { spawn, type ChildProcess } from 'node:child_process';
import type { RowDataPacket } from 'mysql2/promise';
import { constants as fsConstants } from 'node:fs';
import { chmod, open, rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline as pipelineCallback, type Readable, type Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import {
  formatBytes,
  LifeboatError,
  redact,
  type ArtifactMetadata,
  type DirTarget,
  type MysqlStepOptions,
  type MysqlTarget,
  type RestoreTarget,
} from '@lifeboat/shared';
import {
  childEnv,
  connectMysql,
  countRows,
  databaseExists,
  describeServer,
  listTables,
  listUserDatabases,
  query,
  readPassword,
  requireMysqlTool,
  serverVersion,
  writeDefaultsFile,
  type MysqlServer,
  type MysqlTool,
} from '../db/mysql-tools.js';
import { DatabaseFilter, DumpCounter, quoteIdentifier, type DumpContents } from '../db/mysql-dump-counter.js';
import { abortReason, fsReason, isCode, throttled } from '../fs-errors.js';
import { prepareTarget } from '../restore/target.js';
import type { BackupStream, JobContext, RestoreOptions, RestoreSummary, Source } from './source.js';

/**
 * MySQL and MariaDB: mariadb-dump (or mysqldump) in one consistent transaction, its output streamed as the
 * artifact and counted as it passes (db/mysql-dump-counter.ts), so the recorded row counts are exactly those
 * of the dump, writers or not. Restores feed the dump to the mariadb client and compare the row counts.
 *
 * Layout of the artifact:
 * - one database → dumped WITHOUT --databases: no CREATE DATABASE / USE statements, so it restores into a
 *   database of any name (and `mariadb otherdb < dump.sql` works by hand too);
 * - several databases (or "all") → dumped with --databases: each one's CREATE DATABASE and USE. Such a dump
 *   restores one database at a time, under its own name: the target names which.
 * Either way the stream goes through DatabaseFilter, which rewrites the dump's own `USE`/`CREATE DATABASE`/
 * `ALTER DATABASE` statements (mariadb-dump writes `ALTER DATABASE <dumped db>` around routines) to the
 * target, so a restore under another name never writes into the original database.
 */

type MysqlMetadata = Extract<ArtifactMetadata, { kind: 'mysql' }>;

/** The options every dump gets; --defaults-extra-file always comes before them. */
const DUMP_OPTIONS = [
  '--single-transaction',
  '--routines',
  '--triggers',
  '--events',
  '--hex-blob',
  '--quick',
  // The trailer ("-- Dump completed") is how a cut-short dump is told from a whole one: comments stay on
  // even if an option file says otherwise, and without a date, so unchanged data deduplicates.
  '--comments',
  '--skip-dump-date',
  '--default-character-set=utf8mb4',
  '--max-allowed-packet=1G',
  // Tablespaces need the PROCESS privilege on MySQL 8 and are the server's business, not the database's.
  '--no-tablespaces',
];

const STDERR_KEEP = 64 * 1024;

export const mysqlSource: Source<MysqlStepOptions> = {
  kind: 'mysql',
  targets: ['mysql', 'dir'],
  backup: backupMysql,
  restore: (input, target, options, ctx) => restoreMysql(input, target, options, ctx),
};

// ── Backup ────────────────────────────────────────────────────────────────────

async function backupMysql(options: MysqlStepOptions, ctx: JobContext): Promise<BackupStream> {
  if (ctx.signal.aborted) throw abortReason(ctx.signal);
  const password = await readPassword(options, 'source_failed');
  const server: MysqlServer = { host: options.host, port: options.port, user: options.user, ...(password !== undefined ? { password } : {}) };
  const tool = await requireMysqlTool('dump', 'source_failed');

  // Everything that can be checked is checked before a byte moves.
  const { version, databases } = await inspectServer(server, options);
  const single = databases.length === 1;
  const ignored = ignoreTableOptions(options.excludeTables ?? [], databases);
  if (ctx.signal.aborted) throw abortReason(ctx.signal);

  const defaults = await writeDefaultsFile(server);
  let child: ChildProcess;
  try {
    const args = [defaults.argument, ...DUMP_OPTIONS, ...ignored, ...(single ? [] : ['--databases']), '--', ...databases];
    child = spawn(tool.path, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv(options.passwordEnv) });
  } catch (err) {
    await defaults.remove();
    throw new LifeboatError('source_failed', `cannot run ${tool.name}: ${err instanceof Error ? (err as NodeJS.ErrnoException).code ?? 'error' : 'error'}`);
  }
  ctx.log.info(`dumping ${databases.length === 1 ? 'database' : 'databases'} ${databases.join(', ')} from ${describeServer(server)} with ${tool.name} ${tool.version}`);

  const counter = new DumpCounter(single ? { database: databases[0]! } : {});
  const stderr = collectStderr(child);
  const exit = childExit(child);
  const report = throttled((bytes) => ctx.progress('dumping', bytes));
  let bytes = 0;
  child.stdout!.on('data', (piece: Buffer) => {
    bytes += piece.length;
    report(bytes);
  });
  // pipeline: when the consumer goes away (a failed upload destroys the stream), the dump's stdout is
  // closed and mariadb-dump ends on the broken pipe instead of blocking forever.
  const piped = pipeline(child.stdout!, counter).then(
    () => null,
    (err: unknown) => err,
  );
  const onAbort = () => {
    child.kill('SIGTERM');
    // mariadb-dump ends on SIGTERM; should it not, the metadata must still settle.
    setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, 5000).unref();
    counter.destroy(abortReason(ctx.signal));
  };
  ctx.signal.addEventListener('abort', onAbort, { once: true });

  const metadata = (async (): Promise<MysqlMetadata> => {
    try {
      const [pipeError, exited] = await Promise.all([piped, exit]);
      // The consumer must have read the dump to its end: only then is it the artifact that was counted.
      const readError = await finished(counter).then(
        () => null,
        (err: unknown) => err,
      );
      if (ctx.signal.aborted) throw abortReason(ctx.signal);
      const problem = dumpFailure(tool, exited, stderr.text(), pipeError ?? readError, counter.contents());
      if (problem) throw problem;
      ctx.progress('dumping', bytes);
      for (const line of stderr.text().split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 10)) ctx.warn(`${tool.name}: ${redact(line)}`);
      return {
        kind: 'mysql',
        serverVersion: version,
        dumpTool: tool.name,
        dumpVersion: tool.version,
        databases: recordedDatabases(databases, counter.contents(), tool),
      };
    } finally {
      ctx.signal.removeEventListener('abort', onAbort);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await defaults.remove();
    }
  })();
  // The consumer reads `metadata` after the stream; a failure before then must not be an unhandled rejection.
  metadata.catch(() => {});
  return { kind: 'mysql', name: databases.join(' '), stream: counter, metadata };
}

/** Connects with mysql2 first: a wrong password, an unreachable host or a missing database fail here. */
async function inspectServer(server: MysqlServer, options: MysqlStepOptions): Promise<{ version: string; databases: string[] }> {
  const connection = await connectMysql(server, 'source_failed');
  try {
    const version = await serverVersion(connection, 'source_failed');
    if (options.databases === 'all') {
      const databases = await listUserDatabases(connection, 'source_failed');
      if (databases.length === 0) {
        throw new LifeboatError('source_failed', `${describeServer(server)} has no databases to back up ("all" leaves out information_schema, performance_schema, sys and mysql)`);
      }
      return { version, databases };
    }
    const databases = [...new Set(options.databases)];
    const missing: string[] = [];
    for (const database of databases) if (!(await databaseExists(connection, database, 'source_failed'))) missing.push(database);
    if (missing.length > 0) {
      const list = missing.map((d) => `"${d}"`).join(', ');
      throw new LifeboatError('source_failed', `database${missing.length > 1 ? 's' : ''} ${list} ${missing.length > 1 ? 'do' : 'does'} not exist on ${describeServer(server)} (or ${options.user} may not see ${missing.length > 1 ? 'them' : 'it'})`);
    }
    return { version, databases };
  } finally {
    await connection.end().catch(() => {});
  }
}

/** excludeTables as --ignore-table options: "database.table", or a bare table when one database is dumped. */
function ignoreTableOptions(excludeTables: readonly string[], databases: readonly string[]): string[] {
  return excludeTables.map((entry) => {
    if (entry.includes('.')) return `--ignore-table=${entry}`;
    if (databases.length === 1) return `--ignore-table=${databases[0]}.${entry}`;
    throw new LifeboatError('invalid_plan', `mysql.excludeTables: "${entry}" must be written "database.table" when several databases are dumped`);
  });
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The child could not be started at all (ENOENT, EACCES…). */
  spawnError?: string;
}

function childExit(child: ChildProcess): Promise<Exit> {
  return new Promise((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => resolve({ code: null, signal: null, spawnError: err.code ?? 'error' }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

function collectStderr(child: ChildProcess): { text(): string } {
  let kept = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (piece: string) => {
    if (kept.length < STDERR_KEEP) kept += piece.slice(0, STDERR_KEEP - kept.length);
  });
  return { text: () => kept };
}

/**
 * A tool's stderr as it goes into an error message: its ERROR lines when it has some (the client also echoes
 * the whole failing statement, data and all), trimmed, at most 2000 characters, redacted.
 */
function stderrForMessage(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !/^-+$/.test(l));
  const errors = lines.filter((l) => /^ERROR\b/.test(l));
  const kept = (errors.length > 0 ? errors.slice(0, 3) : lines).join('; ');
  return redact(kept.length > 2000 ? kept.slice(0, 2000) + '…' : kept);
}

/** Why the dump is not a whole artifact, or null when it is (DESIGN §11: exit code, signal, bytes, trailer). */
function dumpFailure(tool: MysqlTool, exited: Exit, stderr: string, streamError: unknown, contents: DumpContents): LifeboatError | null {
  const said = stderrForMessage(stderr);
  if (exited.spawnError) return new LifeboatError('source_failed', `cannot run ${tool.name} (${exited.spawnError})`);
  // First: a consumer that went away ends the dump on a broken pipe, which is not the dump's fault.
  if (streamError) {
    if (streamError instanceof LifeboatError) return streamError;
    return new LifeboatError('source_failed', `the ${tool.name} stream was closed before it was complete`);
  }
  if (exited.signal) return new LifeboatError('source_failed', `${tool.name} was killed by ${exited.signal}${said ? `: ${said}` : ''}`);
  if (exited.code !== 0) return new LifeboatError('source_failed', `${tool.name} failed (exit code ${exited.code})${said ? `: ${said}` : ''}`);
  if (contents.bytes === 0) return new LifeboatError('source_failed', `${tool.name} produced no output${said ? `: ${said}` : ''}`);
  if (contents.problem) return new LifeboatError('source_failed', `${tool.name}'s output is incomplete: ${contents.problem}`);
  return null;
}

/** The recorded databases, in the order asked for, each with every table the dump created and its rows. */
function recordedDatabases(asked: readonly string[], contents: DumpContents, tool: MysqlTool): MysqlMetadata['databases'] {
  return asked.map((name) => {
    const dumped = contents.databases.find((d) => d.name === name);
    if (!dumped) throw new LifeboatError('source_failed', `${tool.name}'s output holds no database "${name}"`);
    return { name, tables: dumped.tables.map((t) => ({ name: t.name, rows: t.rows })) };
  });
}

// ── Restore ───────────────────────────────────────────────────────────────────

async function restoreMysql(input: Readable, target: RestoreTarget, options: RestoreOptions, ctx: JobContext): Promise<RestoreSummary> {
  try {
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    const metadata = options.artifact?.metadata;
    if (!metadata || metadata.kind !== 'mysql') throw new LifeboatError('restore_failed', 'the artifact carries no MySQL metadata (tables and row counts); it cannot be restored as a MySQL dump');
    if (target.kind === 'mysql') return await restoreIntoDatabase(input, target, metadata, ctx);
    if (target.kind === 'dir') return await restoreIntoDirectory(input, target, metadata, ctx);
    throw new LifeboatError('restore_refused', `a MySQL dump cannot be restored into a ${target.kind} target`);
  } catch (err) {
    input.destroy();
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    if (err instanceof LifeboatError) throw err;
    throw new LifeboatError('restore_failed', `the MySQL restore failed: ${err instanceof Error ? fsReason(err) : String(err)}`);
  }
}

/**
 * Which database of the artifact goes into the target: the only one (under the target's name), or, for
 * a several-database artifact, the one the target names (under that same name).
 */
function chooseDatabase(metadata: MysqlMetadata, target: MysqlTarget): { source: string; mode: 'single' | 'select' } {
  const names = metadata.databases.map((d) => d.name);
  if (names.length === 1) return { source: names[0]!, mode: 'single' };
  if (names.includes(target.database)) return { source: target.database, mode: 'select' };
  throw new LifeboatError(
    'restore_refused',
    `the artifact holds ${names.length} databases (${names.join(', ')}) and the target names "${target.database}", which is none of them: ` +
      'name one of them as the target database to restore it alone under its own name, or restore with --to DIR to get the whole dump',
  );
}

async function restoreIntoDatabase(input: Readable, target: MysqlTarget, metadata: MysqlMetadata, ctx: JobContext): Promise<RestoreSummary> {
  const { source, mode } = chooseDatabase(metadata, target);
  const recorded = metadata.databases.find((d) => d.name === source)!.tables;
  const password = await readPassword(target, 'restore_failed');
  const server: MysqlServer = { host: target.host, port: target.port, user: target.user, ...(password !== undefined ? { password } : {}) };
  const where = `${target.database}@${server.host.startsWith('/') ? server.host : `${server.host}:${server.port}`}`;
  const client = await requireMysqlTool('client', 'restore_failed');

  // Before any byte is written: the target is reachable, and empty unless --force.
  const connection = await connectMysql(server, 'restore_failed');
  try {
    if (await databaseExists(connection, target.database, 'restore_failed')) {
      // Tables, views and sequences alike: anything there makes the database not empty.
      const [row] = await query<RowDataPacket & { n: string }>(
        connection,
        'SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?',
        [target.database],
        'restore_failed',
        `looking into database ${where}`,
      );
      const tables = Number(row?.n ?? 0);
      if (tables > 0 && !target.force) {
        throw new LifeboatError('restore_refused', `database ${where} is not empty (${tables} table${tables === 1 ? '' : 's'}); pass --force to restore into it anyway (tables of the same name are replaced)`);
      }
    } else if (mode === 'single') {
      // A several-database dump creates its database itself, with the character set it was dumped with.
      await query(connection, 'CREATE DATABASE ??', [target.database], 'restore_failed', `creating database ${where}`);
    }
  } finally {
    await connection.end().catch(() => {});
  }
  if (ctx.signal.aborted) throw abortReason(ctx.signal);

  const filter = new DatabaseFilter({ source, target: target.database, mode });
  const defaults = await writeDefaultsFile(server);
  try {
    // --binary-mode: the client takes the dump's bytes as they are and runs none of its own commands (\! and
    // friends) but DELIMITER; the dump's sandbox-mode first line stays as a second fence.
    const args = [defaults.argument, '--binary-mode', '--batch', '--max-allowed-packet=1G', ...(mode === 'single' ? [`--database=${target.database}`] : [])];
    ctx.log.info(`restoring ${source === target.database ? `database ${source}` : `database ${source} as ${target.database}`} into ${describeServer(server)} with ${client.name}`);
    await runClient(client, args, pipelineCallback(input, filter, () => {}), target.passwordEnv, ctx);
  } finally {
    await defaults.remove();
  }

  const checked = await compareRowCounts(server, target.database, recorded);
  if (checked.mismatches.length > 0) {
    throw new LifeboatError(
      'restore_failed',
      `restored into ${where}, but the row counts do not match the backup's: ${checked.mismatches.slice(0, 20).join('; ')}${checked.mismatches.length > 20 ? '; …' : ''}`,
      checked.mismatches,
    );
  }
  return {
    summary: `restored ${recorded.length} table${recorded.length === 1 ? '' : 's'}, ${checked.rows} row${checked.rows === 1 ? '' : 's'} into ${where}; row counts match`,
    skipped: filter.skippedStatements > 0 ? [`the statements of the artifact's other databases (${metadata.databases.filter((d) => d.name !== source).map((d) => d.name).join(', ')}) were left out`] : [],
  };
}

/**
 * Feeds the dump to the client's stdin and waits for its verdict. When the dump cannot be read to its end
 * (a refused statement, a broken download, a cancel), the client is killed BEFORE its stdin closes: at
 * end of input it would run whatever part of a statement it holds.
 */
async function runClient(client: MysqlTool, args: string[], dump: Readable, passwordEnv: string | undefined, ctx: JobContext): Promise<void> {
  const child = spawn(client.path, args, { stdio: ['pipe', 'ignore', 'pipe'], env: childEnv(passwordEnv) });
  const stderr = collectStderr(child);
  const exit = childExit(child);
  const stdin = child.stdin!;
  // A client that exits early makes writes fail with EPIPE; its exit code and stderr tell why.
  stdin.on('error', () => {});
  const report = throttled((bytes) => ctx.progress('restoring', bytes));
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  ctx.signal.addEventListener('abort', kill, { once: true });
  let bytes = 0;
  let feedError: unknown = null;
  try {
    for await (const piece of dump as AsyncIterable<Buffer>) {
      if (stdin.destroyed || child.exitCode !== null) break;
      bytes += piece.length;
      report(bytes);
      if (!stdin.write(piece)) await drained(stdin);
    }
  } catch (err) {
    feedError = err;
    kill();
  } finally {
    ctx.signal.removeEventListener('abort', kill);
  }
  if (feedError === null && !ctx.signal.aborted) stdin.end();
  const exited = await exit;
  if (!stdin.destroyed) stdin.destroy();
  dump.destroy();
  if (ctx.signal.aborted) throw abortReason(ctx.signal);
  if (feedError !== null) {
    if (feedError instanceof LifeboatError) throw feedError;
    throw new LifeboatError('restore_failed', `the dump could not be read to its end: ${feedError instanceof Error ? feedError.message : String(feedError)}`);
  }
  const said = stderrForMessage(stderr.text());
  if (exited.spawnError) throw new LifeboatError('restore_failed', `cannot run ${client.name} (${exited.spawnError})`);
  if (exited.signal) throw new LifeboatError('restore_failed', `${client.name} was killed by ${exited.signal}${said ? `: ${said}` : ''}`);
  if (exited.code !== 0) throw new LifeboatError('restore_failed', `${client.name} failed (exit code ${exited.code})${said ? `: ${said}` : ''}`);
  ctx.progress('restoring', bytes);
}

function drained(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}

/** Counts every recorded table in the restored database; the differences, each "table: recorded N, found M". */
async function compareRowCounts(server: MysqlServer, database: string, recorded: MysqlMetadata['databases'][number]['tables']): Promise<{ rows: number; mismatches: string[] }> {
  const connection = await connectMysql(server, 'restore_failed');
  try {
    const present = new Set(await listTables(connection, database, 'restore_failed'));
    const mismatches: string[] = [];
    let rows = 0;
    for (const table of recorded) {
      if (!present.has(table.name)) {
        mismatches.push(`${quoteIdentifier(table.name)}: recorded ${table.rows} rows, table missing`);
        continue;
      }
      const found = await countRows(connection, database, table.name, 'restore_failed');
      rows += found;
      if (found !== table.rows) mismatches.push(`${quoteIdentifier(table.name)}: recorded ${table.rows} rows, found ${found}`);
    }
    return { rows, mismatches };
  } finally {
    await connection.end().catch(() => {});
  }
}

/** The dump as one file in the directory, named after its database(s); its row counts checked on the way. */
async function restoreIntoDirectory(input: Readable, target: DirTarget, metadata: MysqlMetadata, ctx: JobContext): Promise<RestoreSummary> {
  const prepared = await prepareTarget(target);
  const file = path.join(prepared.root, dumpFileName(metadata));
  const single = metadata.databases.length === 1;
  const counter = new DumpCounter(single ? { database: metadata.databases[0]!.name } : {});
  // Never through a symlink planted in the target; an existing file only when --force.
  const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW | (target.force ? 0 : fsConstants.O_EXCL);
  const report = throttled((bytes) => ctx.progress('restoring', bytes));
  let bytes = 0;
  counter.on('data', (piece: Buffer) => {
    bytes += piece.length;
    report(bytes);
  });
  try {
    // A dump holds data people protect: only the restoring user reads it until they decide otherwise.
    const handle = await open(file, flags, 0o600);
    await pipeline(input, counter, handle.createWriteStream(), { signal: ctx.signal });
  } catch (err) {
    await rm(file, { force: true }).catch(() => {});
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    if (isCode(err, 'EEXIST') || isCode(err, 'ELOOP')) throw new LifeboatError('restore_refused', `${file} already exists; pass --force to overwrite it`);
    throw new LifeboatError('restore_failed', `cannot write ${file}: ${fsReason(err)}`);
  }
  const contents = counter.contents();
  const mismatches = contents.problem ? [contents.problem] : compareContents(metadata, contents);
  if (mismatches.length > 0) {
    await rm(file, { force: true }).catch(() => {});
    throw new LifeboatError('restore_failed', `the dump does not match what was recorded at backup: ${mismatches.slice(0, 20).join('; ')}`, mismatches);
  }
  if (prepared.created) await chmod(prepared.root, 0o755);
  const tables = metadata.databases.reduce((n, d) => n + d.tables.length, 0);
  const rows = metadata.databases.reduce((n, d) => n + d.tables.reduce((m, t) => m + t.rows, 0), 0);
  return {
    summary: `wrote ${file} (${formatBytes(contents.bytes)}: ${tables} table${tables === 1 ? '' : 's'}, ${rows} row${rows === 1 ? '' : 's'}, as recorded)`,
    skipped: [],
  };
}

function compareContents(metadata: MysqlMetadata, contents: DumpContents): string[] {
  const mismatches: string[] = [];
  for (const database of metadata.databases) {
    const dumped = contents.databases.find((d) => d.name === database.name);
    for (const table of database.tables) {
      const found = dumped?.tables.find((t) => t.name === table.name);
      if (!found) mismatches.push(`${quoteIdentifier(database.name)}.${quoteIdentifier(table.name)}: recorded ${table.rows} rows, not in the dump`);
      else if (found.rows !== table.rows) mismatches.push(`${quoteIdentifier(database.name)}.${quoteIdentifier(table.name)}: recorded ${table.rows} rows, the dump has ${found.rows}`);
    }
  }
  return mismatches;
}

/** "<database>.sql", or the databases joined by "+"; only characters safe in a file name. */
export function dumpFileName(metadata: MysqlMetadata): string {
  const names = metadata.databases.map((d) => d.name);
  let base = names.join('+');
  if (base.length > 100) base = `mysql-${names.length}-databases`;
  base = base.replace(/[^A-Za-z0-9_.@+-]/g, '_').replace(/^[.-]/, '_');
  return `${base}.sql`;
}

import { createReadStream } from 'node:fs';
import { open, rm, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { formatBytes, LifeboatError, type ArtifactMetadata, type DirTarget, type ErrorCode, type SqliteStepOptions, type TableRecord } from '@lifeboat/shared';
import { runChild } from '../child.js';
import { abortReason, fsReason, isCode, shown, throttled } from '../fs-errors.js';
import { makeScratchDir } from '../scratch/common.js';
import { restoreAsFile } from './command.js';
import type { BackupStream, JobContext, RestoreOptions, RestoreSummary, Source } from './source.js';

/**
 * The sqlite source: a consistent copy of a live database through SQLite's online backup API (the sqlite3
 * CLI's `.backup`, as the agent is pure JS), made inside one read transaction so writers never restart it
 * (in WAL mode they are not held up either; in rollback-journal mode they wait while the copy is made). The copy
 * is checked (`PRAGMA integrity_check`, tables and exact row counts), streamed, and removed whatever happens.
 * A restore writes the file into a directory and checks it the same way against what was recorded.
 */

type SqliteMetadata = Extract<ArtifactMetadata, { kind: 'sqlite' }>;

export interface SqliteSourceSettings {
  /** The sqlite3 CLI: a path, or a name looked up on PATH. */
  sqlite3: string;
  /** Where the private 0700 directory for the copy is made (the system temp dir, i.e. TMPDIR, by default). */
  tempParent?: string;
  /** How long the copy waits for a writer's lock before it fails. */
  busyTimeoutMs: number;
}

const DEFAULT_SETTINGS: SqliteSourceSettings = { sqlite3: 'sqlite3', busyTimeoutMs: 10_000 };
/** The copy's name inside its private directory: the CLI is run there, so no path is ever quoted into a dot-command. */
const COPY_NAME = 'copy.db';
const READ_BYTES = 1024 * 1024;
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');
/** Files SQLite keeps beside a database; an old one beside a restored file would be replayed into it. */
const SIDE_FILES = ['-wal', '-shm', '-journal'] as const;
/**
 * Options for every sqlite3 run on a copy (ours, or one restored from the store): no ~/.sqliterc, safe mode (no
 * file access, no extensions, no shell from SQL), errors stop the run.
 */
const INSPECT_OPTIONS = ['-bail', '-batch', '-safe', '-init', '/dev/null'];

export function createSqliteSource(settings: Partial<SqliteSourceSettings> = {}): Source<SqliteStepOptions> {
  const s: SqliteSourceSettings = { ...DEFAULT_SETTINGS, ...settings };
  return {
    kind: 'sqlite',
    targets: ['dir'],
    backup: (options, ctx) => backupSqlite(options, ctx, s),
    // A source is only given one of its `targets`.
    restore: (input, target, options, ctx) => restoreSqlite(input, target as DirTarget, options, ctx, s),
  };
}

export const sqliteSource: Source<SqliteStepOptions> = createSqliteSource();

async function backupSqlite(options: SqliteStepOptions, ctx: JobContext, s: SqliteSourceSettings): Promise<BackupStream> {
  if (ctx.signal.aborted) throw abortReason(ctx.signal);
  const source = options.path;
  // Validated by the plan schema already; the CLI must never read it as an option ("-…") or a URI ("file:…").
  if (!source.startsWith('/') || /[\0\n\r]/.test(source)) throw new LifeboatError('bad_request', `sqlite path ${shown(source)} must be an absolute path`);
  const expectedBytes = await checkSource(source, ctx);

  const parent = s.tempParent;
  const scratch = await makeScratchDir('dir', parent).catch((err: unknown) => {
    throw new LifeboatError('source_failed', `cannot make a temporary directory for the copy of ${shown(source)} in ${parent ?? 'the temp dir'}: ${fsReason(err)}`);
  });
  let removed: Promise<void> | null = null;
  const removeScratch = () => (removed ??= rm(scratch, { recursive: true, force: true }));
  try {
    await checkSpace(scratch, expectedBytes, source);
    ctx.progress('copying database', 0, expectedBytes);
    await copyDatabase(source, scratch, ctx, s);
    const copy = path.posix.join(scratch, COPY_NAME);
    const { size } = await stat(copy);
    ctx.progress('checking copy', 0, size);
    const tables = await inspectDatabase(copy, ctx, s, 'source_failed', `the copy of ${shown(source)}`);
    const recorded: SqliteMetadata = { kind: 'sqlite', path: source, sizeBytes: size, tables, integrity: 'ok' };
    return streamCopy(copy, recorded, ctx, removeScratch);
  } catch (err) {
    await removeScratch();
    throw ctx.signal.aborted ? abortReason(ctx.signal) : err;
  }
}

/** Fails before anything is copied when the path is missing or not a SQLite database; returns about how big the copy will be. */
async function checkSource(source: string, ctx: JobContext): Promise<number> {
  const info = await stat(source).catch((err: unknown) => {
    if (isCode(err, 'ENOENT') || isCode(err, 'ENOTDIR')) {
      throw new LifeboatError('path_not_found', `sqlite database ${shown(source)} does not exist on this agent (plan step sqlite.path)`);
    }
    throw new LifeboatError('source_failed', `cannot read sqlite database ${shown(source)}: ${fsReason(err)}`);
  });
  if (!info.isFile()) throw new LifeboatError('source_failed', `sqlite database ${shown(source)} is not a regular file (plan step sqlite.path names the database file)`);
  if (info.size === 0) {
    // SQLite itself takes an empty file for an empty database; most likely it is not the one meant.
    ctx.warn(`sqlite database ${shown(source)} is an empty file: backed up as an empty database`);
    return 0;
  }
  const header = Buffer.alloc(SQLITE_HEADER.length);
  try {
    const handle = await open(source, 'r');
    try {
      await handle.read(header, 0, header.length, 0);
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw new LifeboatError('source_failed', `cannot read sqlite database ${shown(source)}: ${fsReason(err)}`);
  }
  if (!header.equals(SQLITE_HEADER)) {
    throw new LifeboatError(
      'source_failed',
      `${shown(source)} is not a SQLite database: it does not start with the SQLite header (an encrypted database, e.g. SQLCipher, cannot be copied this way)`,
    );
  }
  // Pages still in the write-ahead log are part of the copy too.
  const wal = await stat(source + '-wal').catch(() => null);
  return info.size + (wal?.isFile() ? wal.size : 0);
}

async function checkSpace(dir: string, needed: number, source: string): Promise<void> {
  const fs = await statfs(dir).catch(() => null);
  if (!fs) return;
  const available = fs.bavail * fs.bsize;
  if (available < needed) {
    throw new LifeboatError(
      'source_failed',
      `not enough space for a copy of ${shown(source)} in ${path.posix.dirname(dir)} (needs about ${formatBytes(needed)}, ${formatBytes(available)} free); point TMPDIR at a larger filesystem`,
    );
  }
}

/**
 * `.backup` inside a read transaction: every backup step then reads the same snapshot, so a writer in
 * another process can neither make the copy inconsistent nor restart it. `-readonly` keeps the CLI from ever
 * writing to the application's database (no checkpoint on close); `.timeout` waits for a writer's lock.
 * The source path is absolute (never an option) and is an argument, never quoted into a command; the copy's
 * name is relative to the CLI's working directory, our private directory.
 */
async function copyDatabase(source: string, scratch: string, ctx: JobContext, s: SqliteSourceSettings): Promise<void> {
  try {
    await runChild({
      tool: 'sqlite3',
      program: s.sqlite3,
      args: ['-bail', '-readonly', '-init', '/dev/null', source, `.timeout ${s.busyTimeoutMs}`, 'BEGIN', 'SELECT count(*) FROM sqlite_master', `.backup ${COPY_NAME}`, 'COMMIT'],
      cwd: scratch,
      signal: ctx.signal,
    });
  } catch (err) {
    if (!(err instanceof LifeboatError) || err.code !== 'source_failed') throw err;
    const locked = /database is locked|SQLITE_BUSY/i.test(err.message)
      ? ` (a writer held its lock for longer than ${s.busyTimeoutMs / 1000}s; try again at a quieter time)`
      : '';
    throw new LifeboatError('source_failed', `cannot copy sqlite database ${shown(source)}: ${err.message}${locked}`);
  }
}

/**
 * Integrity check, tables and exact row counts of a database file we own (a fresh copy or a restored file).
 * Virtual tables are left out (their rows live in their shadow tables, which are counted), as are SQLite's own
 * sqlite_* tables.
 */
async function inspectDatabase(file: string, ctx: JobContext, s: SqliteSourceSettings, failureCode: ErrorCode, what: string): Promise<TableRecord[]> {
  const run = (mode: string, sql: string) =>
    runChild({
      tool: 'sqlite3',
      program: s.sqlite3,
      args: [...INSPECT_OPTIONS, mode, file],
      // SQL on stdin: a database with thousands of tables would not fit in one argument.
      input: Readable.from([`PRAGMA trusted_schema=OFF;\n${sql}`]),
      signal: ctx.signal,
      failureCode,
    }).then(
      (result) => result.stdout,
      (err: unknown) => {
        // A database damaged past what integrity_check can report makes sqlite3 itself fail ("malformed").
        throw err instanceof LifeboatError && err.code === failureCode ? new LifeboatError(failureCode, `checking ${what} failed: ${err.message}`) : err;
      },
    );

  const integrity = (await run('-list', 'PRAGMA integrity_check;\n')).trim();
  if (integrity !== 'ok') {
    const shownResult = integrity.length > 2000 ? integrity.slice(0, 2000) + '…' : integrity;
    throw new LifeboatError(failureCode, `${what} fails SQLite's integrity check: ${shownResult || '(no result)'}`);
  }

  const listed = await run(
    '-json',
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name;\n",
  );
  const names = parseNames(listed);
  if (names.length === 0) return [];
  // One statement per table (a compound SELECT is capped at 500 terms); rows answer by index, names never round-trip.
  const counts = await run('-list', names.map((name, i) => `SELECT ${i}, count(*) FROM "${name.replace(/"/g, '""')}";\n`).join(''));
  const rows = new Map<number, number>();
  for (const line of counts.split('\n')) {
    const match = /^(\d+)\|(\d+)$/.exec(line.trim());
    if (match) rows.set(Number(match[1]), Number(match[2]));
  }
  return names.map((name, i) => {
    const count = rows.get(i);
    if (count === undefined) throw new LifeboatError(failureCode, `sqlite3 gave no row count for table ${JSON.stringify(name)} of ${what}`);
    return { name, rows: count };
  });
}

function parseNames(json: string): string[] {
  if (json.trim() === '') return [];
  const parsed: unknown = JSON.parse(json);
  if (!Array.isArray(parsed)) throw new LifeboatError('internal', 'sqlite3 -json did not answer with an array');
  return parsed.map((row: unknown) => {
    const name = (row as { name?: unknown } | null)?.name;
    if (typeof name !== 'string') throw new LifeboatError('internal', 'sqlite3 -json answered a row without a name');
    return name;
  });
}

/** The copy as the artifact; the private directory goes when the stream ends, fails or is destroyed. */
function streamCopy(copy: string, recorded: SqliteMetadata, ctx: JobContext, removeScratch: () => Promise<void>): BackupStream {
  let bytes = 0;
  const report = throttled((n) => ctx.progress('reading copy', n, recorded.sizeBytes));
  async function* read(): AsyncGenerator<Buffer> {
    for await (const chunk of createReadStream(copy, { highWaterMark: READ_BYTES }) as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      report(bytes);
      yield chunk;
    }
  }
  const stream = Readable.from(read(), { objectMode: false, highWaterMark: READ_BYTES });
  // `metadata` carries the verdict; the stream's error is for consumers that listen, never an agent crash.
  stream.on('error', () => {});
  const onAbort = () => stream.destroy(abortReason(ctx.signal));
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  const metadata = finished(stream)
    .then((): SqliteMetadata => {
      if (bytes !== recorded.sizeBytes) {
        throw new LifeboatError('source_failed', `the copy of ${shown(recorded.path)} changed while it was read (${bytes} of ${recorded.sizeBytes} bytes)`);
      }
      ctx.progress('reading copy', bytes, recorded.sizeBytes);
      return recorded;
    })
    .catch((err: unknown) => {
      if (ctx.signal.aborted) throw abortReason(ctx.signal);
      if (err instanceof LifeboatError) throw err;
      if (isCode(err, 'ERR_STREAM_PREMATURE_CLOSE')) throw new LifeboatError('source_failed', `the copy of ${shown(recorded.path)} was closed before it was read to the end`);
      throw new LifeboatError('source_failed', `reading the copy of ${shown(recorded.path)} failed: ${fsReason(err)}`);
    })
    .finally(async () => {
      ctx.signal.removeEventListener('abort', onAbort);
      await removeScratch();
    });
  // The consumer reads `metadata` after the stream; a failure before then must not be an unhandled rejection.
  metadata.catch(() => {});
  return { kind: 'sqlite', name: recorded.path, stream, metadata };
}

async function restoreSqlite(input: Readable, target: DirTarget, options: RestoreOptions, ctx: JobContext, s: SqliteSourceSettings): Promise<RestoreSummary> {
  const recorded = options.artifact?.metadata.kind === 'sqlite' ? options.artifact.metadata : null;
  const fileName = databaseFileName(recorded?.path ?? options.artifact?.name);
  const written = await restoreAsFile(input, target, fileName, ctx, {
    expectedBytes: options.artifact?.size,
    refuseBeside: SIDE_FILES,
    verify: (file) => verifyRestored(file, fileName, recorded, ctx, s),
  });
  const tables = written.verified ?? [];
  const rows = tables.reduce((sum, t) => sum + t.rows, 0);
  const comparison = recorded
    ? `row counts equal those recorded at backup (${rows} rows)`
    : `${rows} rows (no row counts were recorded to compare with)`;
  return {
    summary: `restored sqlite database ${fileName} (${formatBytes(written.bytes)}) into ${target.path}: integrity ok, ${tables.length} table${tables.length === 1 ? '' : 's'}, ${comparison}`,
    skipped: [],
  };
}

/** The database's original base name; anything odd (from the store) falls back to a plain name. */
function databaseFileName(original: string | undefined): string {
  const base = original ? path.posix.basename(original) : '';
  return base && base !== '.' && base !== '..' && !/[\0-\x1f\x7f]/.test(base) ? base : 'database.sqlite';
}

/** Checks the restored file before it takes its name; the files SQLite made beside it while checking go too. */
async function verifyRestored(file: string, fileName: string, recorded: SqliteMetadata | null, ctx: JobContext, s: SqliteSourceSettings): Promise<TableRecord[]> {
  try {
    const tables = await inspectDatabase(file, ctx, s, 'restore_failed', `the restored database ${fileName}`);
    if (recorded) {
      const problems = compareTables(recorded.tables, tables);
      if (problems.length > 0) {
        throw new LifeboatError('restore_failed', `the restored database ${fileName} does not match the backup: ${problems.slice(0, 20).join('; ')}${problems.length > 20 ? `; and ${problems.length - 20} more` : ''}`);
      }
    }
    return tables;
  } finally {
    await Promise.all(SIDE_FILES.map((suffix) => rm(file + suffix, { force: true })));
  }
}

/** What differs between the tables recorded at backup and those restored; empty when they are the same. */
export function compareTables(recorded: readonly TableRecord[], restored: readonly TableRecord[]): string[] {
  const problems: string[] = [];
  const restoredRows = new Map(restored.map((t) => [t.name, t.rows]));
  const recordedNames = new Set(recorded.map((t) => t.name));
  for (const table of recorded) {
    const rows = restoredRows.get(table.name);
    if (rows === undefined) problems.push(`table ${JSON.stringify(table.name)} is missing`);
    else if (rows !== table.rows) problems.push(`table ${JSON.stringify(table.name)} has ${rows} rows, ${table.rows} were recorded`);
  }
  for (const table of restored) {
    if (!recordedNames.has(table.name)) problems.push(`table ${JSON.stringify(table.name)} was not in the backup`);
  }
  return problems;
}

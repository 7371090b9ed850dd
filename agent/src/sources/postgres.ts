import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, link, mkdtemp, rm, statfs, unlink } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import type pg from 'pg';
import {
  formatBytes,
  LifeboatError,
  type DirTarget,
  type MetadataOf,
  type PostgresStepOptions,
  type PostgresTarget,
  type RestoreTarget,
  type TableRecord,
} from '@lifeboat/shared';
import { runChild, streamChild, TailBuffer } from '../child.js';
import {
  connectForBackup,
  APPLICATION_NAME,
  CHECKSUM_MAX_ROWS,
  conninfo,
  connectPostgres,
  countRows,
  displayName,
  dumpToolFor,
  pgReason,
  pgToolEnv,
  qualifiedName,
  quoteIdent,
  readPassword,
  restoreToolFor,
  serverVersion,
  setStableOutput,
  tableChecksum,
  tableRecord,
  writePassfile,
  type Passfile,
  type PgEndpoint,
  type PgTool,
  PostgresConnectError,
} from '../db/postgres-tools.js';
import { abortReason, fsReason, isCode, throttled } from '../fs-errors.js';
import { prepareTarget } from '../restore/target.js';
import type { BackupStream, JobContext, RestoreOptions, RestoreSummary, Source } from './source.js';

/**
 * The postgres source: `pg_dump -Fc -Z0` (uncompressed custom format: it deduplicates well, the store
 * compresses, and pg_restore restores it in parallel) in a snapshot exported by a `pg` connection, in which
 * the same connection counts each table's rows and checksums its content for the artifact's metadata.
 * Restores go through pg_restore only (never psql: DESIGN §11), into a database (row counts and checksums
 * compared afterwards) or as a file into a directory.
 */

export type PostgresMetadata = MetadataOf<'postgres'>;

export interface PostgresSourceSettings {
  /** Where to look for pg_dump and pg_restore; default /usr/lib/postgresql/<major>/bin (newest first), then PATH. */
  binDirs?: readonly string[];
  /**
   * Artifacts at least this big are spooled to a private temporary file and restored with `pg_restore -j`;
   * smaller ones stream straight into pg_restore in a single transaction. See restoreToPostgres.
   */
  parallelRestoreMinBytes?: number;
  /** Parallel jobs of pg_restore -j; default the CPUs, between 2 and 4. */
  restoreJobs?: number;
  /** Tables with more rows get no content checksum. */
  checksumMaxRows?: number;
}

export const DEFAULT_PARALLEL_RESTORE_MIN_BYTES = 256 * 1024 * 1024;

/** How much of `pg_restore --list`'s output is kept: its header, which says how many TOC entries it read. */
const LISTING_HEAD_BYTES = 16 * 1024;
/** The first bytes of every custom-format archive. */
const CUSTOM_FORMAT_MAGIC = Buffer.from('PGDMP');

export function createPostgresSource(settings: PostgresSourceSettings = {}): Source<PostgresStepOptions> {
  return {
    kind: 'postgres',
    backup: (options, ctx) => backupPostgres(options, ctx, settings),
    targets: ['postgres', 'dir'],
    restore: (input, target, options, ctx) => restorePostgres(input, target, options, ctx, settings),
  };
}

export const postgresSource: Source<PostgresStepOptions> = createPostgresSource();

// ── backup ──────────────────────────────────────────────────────────────────────

async function backupPostgres(options: PostgresStepOptions, ctx: JobContext, settings: PostgresSourceSettings): Promise<BackupStream> {
  const { endpoint, password, client } = await connectForBackup(options, ctx.signal);
  // Until pg_dump runs, a cancel ends the connection, which ends whatever query is running.
  const onAbortWhilePreparing = () => void client.end().catch(() => {});
  ctx.signal.addEventListener('abort', onAbortWhilePreparing, { once: true });
  let passfile: Passfile | undefined;
  let handedOver = false;
  try {
    const server = await serverVersion(client);
    const dumpTool = await dumpToolFor('pg_dump', server, settings.binDirs);
    const tocReader = await tocReaderFor(dumpTool, settings.binDirs);

    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    // As pg_dump does: a table whose rows row-level security would hide fails rather than being dumped in part.
    // No timeouts: counting a big table takes long, and this transaction sits idle while pg_dump runs.
    await client.query(
      "SELECT pg_catalog.set_config('row_security', 'off', true), pg_catalog.set_config('statement_timeout', '0', true)," +
        " pg_catalog.set_config('idle_in_transaction_session_timeout', '0', true)",
    );
    await setStableOutput(client);
    const { rows: exported } = await client.query<{ snapshot: string }>('SELECT pg_catalog.pg_export_snapshot() AS snapshot');
    const snapshot = exported[0]!.snapshot;

    const selection = await selectContent(client, options, ctx);
    const tables: TableRecord[] = [];
    for (const [index, table] of selection.tables.entries()) {
      if (ctx.signal.aborted) throw abortReason(ctx.signal);
      ctx.progress(`counting rows (${index + 1}/${selection.tables.length} tables)`, 0);
      tables.push(await tableRecord(client, table, settings.checksumMaxRows ?? CHECKSUM_MAX_ROWS));
    }
    const roles = await neededRoles(client, selection.schemaFilter);
    // pg_dump leaves extensions out when it is given schemas.
    const extensions = options.schemas?.length ? [] : await installedExtensions(client);

    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    ctx.signal.removeEventListener('abort', onAbortWhilePreparing);
    passfile = password === undefined ? undefined : await writePassfile(password);
    const args = [
      '--format=custom',
      '--compress=0',
      `--snapshot=${snapshot}`,
      '--no-password',
      ...(options.schemas ?? []).map((s) => `--schema=${s}`),
      ...(options.excludeTables ?? []).map((t) => `--exclude-table=${t}`),
      `--dbname=${conninfo({ dbname: endpoint.database, host: endpoint.host, port: endpoint.port, user: endpoint.user, application_name: APPLICATION_NAME })}`,
    ];
    const reportProgress = throttled((bytes) => ctx.progress('dumping', bytes));
    const dump = streamChild({
      tool: 'pg_dump',
      program: dumpTool.path,
      args,
      env: pgToolEnv({ passwordEnv: options.passwordEnv, passfile }),
      signal: ctx.signal,
      onBytes: reportProgress,
    });
    const check = new CustomFormatCheck('pg_dump', tocReader);
    const piped = pipeline(dump.stream, check).catch(() => {});
    handedOver = true;

    const metadata = (async (): Promise<PostgresMetadata> => {
      try {
        const [dumped, read] = await Promise.allSettled([dump.done, finished(check), piped]);
        if (ctx.signal.aborted) throw abortReason(ctx.signal);
        if (read.status === 'rejected') throw read.reason instanceof LifeboatError ? read.reason : dumped.status === 'rejected' ? dumped.reason : streamClosed('pg_dump');
        if (dumped.status === 'rejected') throw dumped.reason;
        if (dumped.value.stderr) ctx.warn(`pg_dump: ${dumped.value.stderr}`);
        ctx.progress('dumping', dumped.value.bytes);
        // The snapshot was needed until pg_dump was done with it. pg_dump succeeded, so it imported the snapshot
        // while this transaction held it: a failure to commit now (a lost connection) changes nothing.
        await client.query('COMMIT').catch((err: unknown) => ctx.log.warn(`closing the exporting transaction failed: ${pgReason(err)}`));
        return {
          kind: 'postgres',
          database: options.database,
          serverVersion: server.version,
          dumpVersion: dumpTool.version,
          format: 'custom',
          tables,
          roles,
          extensions,
        };
      } catch (err) {
        throw backupError(err, ctx.signal, 'pg_dump');
      } finally {
        await client.end().catch(() => {});
        await passfile?.remove();
      }
    })();
    // The consumer reads `metadata` after the stream; a failure before then must not be an unhandled rejection.
    metadata.catch(() => {});
    return { kind: 'postgres', name: options.database, stream: check, metadata };
  } catch (err) {
    throw backupError(err, ctx.signal, 'preparing the dump');
  } finally {
    ctx.signal.removeEventListener('abort', onAbortWhilePreparing);
    if (!handedOver) {
      await client.end().catch(() => {});
      await passfile?.remove();
    }
  }
}

/** The pg_restore that checks what pg_dump wrote: one that reads its archives. */
async function tocReaderFor(dumpTool: PgTool, dirs: readonly string[] | undefined): Promise<string> {
  try {
    return (await restoreToolFor(dumpTool.version, dirs)).path;
  } catch (err) {
    throw err instanceof LifeboatError ? new LifeboatError('source_failed', `${err.message} (it checks every dump)`) : err;
  }
}

function streamClosed(tool: string): LifeboatError {
  return new LifeboatError('source_failed', `the output of ${tool} was closed before it was read to the end`);
}

export function backupError(err: unknown, signal: AbortSignal, what: string): LifeboatError {
  if (signal.aborted) return abortReason(signal);
  if (err instanceof LifeboatError) return err;
  if (isCode(err, 'ERR_STREAM_PREMATURE_CLOSE')) return streamClosed(what);
  return new LifeboatError('source_failed', `${what} failed: ${pgReason(err)}`);
}

/**
 * Passes a custom-format archive through, failing it unless it starts with "PGDMP" and `pg_restore --list`
 * reads its table of contents (DESIGN §11: a dump pg_restore cannot read is no backup). The archive's first
 * bytes are copied to pg_restore --list, at its pace, until it has read the table of contents and exited.
 */
export class CustomFormatCheck extends Transform {
  private head = Buffer.alloc(0);
  private reader: ReturnType<typeof spawn> | null = null;
  private readerExit: Promise<{ code: number | null; signal: NodeJS.Signals | null; listing: string; stderr: string }> | null = null;
  private bytes = 0;

  constructor(
    private readonly tool: string,
    private readonly tocReaderPath: string,
  ) {
    super({ highWaterMark: 1024 * 1024 });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.head.length < CUSTOM_FORMAT_MAGIC.length) {
      this.head = Buffer.concat([this.head, chunk.subarray(0, CUSTOM_FORMAT_MAGIC.length - this.head.length)]);
      if (!CUSTOM_FORMAT_MAGIC.subarray(0, this.head.length).equals(this.head)) {
        return callback(new LifeboatError('source_failed', `the output of ${this.tool} is not a custom-format archive (it does not start with "PGDMP")`));
      }
      if (!this.reader) this.startReader();
    }
    const stdin = this.reader?.stdin;
    if (!stdin || stdin.destroyed || stdin.writableEnded) return callback(null, chunk);
    this.push(chunk);
    if (stdin.write(chunk)) return callback();
    // Backpressure: the next chunk waits until pg_restore took this one, or is gone.
    const resume = () => {
      stdin.off('drain', resume);
      stdin.off('close', resume);
      callback();
    };
    stdin.on('drain', resume);
    stdin.on('close', resume);
  }

  override _flush(callback: TransformCallback): void {
    if (this.bytes === 0) return callback(new LifeboatError('source_failed', `${this.tool} produced no output`));
    if (this.head.length < CUSTOM_FORMAT_MAGIC.length || !this.readerExit) {
      return callback(new LifeboatError('source_failed', `the output of ${this.tool} is too short to be a custom-format archive (${this.bytes} bytes)`));
    }
    this.reader?.stdin?.end();
    this.readerExit.then(
      ({ code, signal, listing, stderr }) => {
        if (code === 0 && signal === null && /^;\s+TOC Entries:/m.test(listing)) return callback();
        const why = stderr || (signal ? `killed by ${signal}` : `exit code ${code}`);
        callback(new LifeboatError('source_failed', `pg_restore --list cannot read the archive ${this.tool} wrote: ${why}`));
      },
      () => callback(new LifeboatError('source_failed', `pg_restore --list could not be started to check the archive ${this.tool} wrote`)),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.reader && this.reader.exitCode === null && this.reader.signalCode === null) this.reader.kill('SIGKILL');
    callback(error);
  }

  private startReader(): void {
    // The header ("; TOC Entries: …") opens the listing, which can be long: the first bytes are what count.
    let listing = Buffer.alloc(0);
    const stderr = new TailBuffer(4 * 1024);
    const reader = spawn(this.tocReaderPath, ['--list'], { stdio: ['pipe', 'pipe', 'pipe'], env: pgToolEnv({}) });
    this.reader = reader;
    // It exits once it has the table of contents; what is still written then gets EPIPE, which is expected.
    reader.stdin!.on('error', () => {});
    reader.stdout!.on('data', (chunk: Buffer) => {
      if (listing.length < LISTING_HEAD_BYTES) listing = Buffer.concat([listing, chunk]).subarray(0, LISTING_HEAD_BYTES);
    });
    reader.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
    this.readerExit = new Promise((resolve, reject) => {
      reader.once('error', (err) => (reader.pid === undefined ? reject(err) : undefined));
      reader.once('close', (code, signal) => resolve({ code, signal, listing: listing.toString('utf8'), stderr: stderr.text() }));
    });
    this.readerExit.catch(() => {});
  }
}

// ── what the dump holds ─────────────────────────────────────────────────────────

/**
 * A pg_dump name pattern (psql's \d rules: unquoted letters fold to lower case, "*" and "?" are wildcards,
 * "." separates schema and name, double quotes keep case and take characters literally, "$" is literal) as one
 * anchored POSIX regular expression per dot-separated part, for the server's `~` operator.
 */
export function namePatternParts(pattern: string): string[] {
  const parts: string[] = [];
  let current = '';
  let inQuotes = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '"') {
      if (inQuotes && pattern[i + 1] === '"') {
        current += '"';
        i++;
      } else {
        inQuotes = !inQuotes;
      }
    } else if (!inQuotes && c === '.') {
      parts.push(current);
      current = '';
    } else if (!inQuotes && c === '*') {
      current += '.*';
    } else if (!inQuotes && c === '?') {
      current += '.';
    } else if (!inQuotes && c >= 'A' && c <= 'Z') {
      current += c.toLowerCase();
    } else if (c === '$' || (inQuotes && /[|*+?()[\]{}.^\\]/.test(c))) {
      current += `\\${c}`;
    } else {
      current += c;
    }
  }
  parts.push(current);
  return parts.map((p) => `^(${p})$`);
}

interface Selection {
  tables: { schema: string; name: string }[];
  /** SQL condition on a pg_namespace row aliased "n", and its parameters: the schemas the dump holds. */
  schemaFilter: SqlCondition;
}

interface SqlCondition {
  sql: string;
  params: string[];
}

/** Schemas pg_dump never dumps. */
const USER_SCHEMA = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'";
/** Objects that belong to an extension are created by CREATE EXTENSION, not dumped. */
const NOT_EXTENSION_MEMBER =
  "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')";

function schemaRegex(pattern: string): string {
  const parts = namePatternParts(pattern);
  if (parts.length > 2) throw new LifeboatError('source_failed', `schema pattern "${pattern}" (schemas) has too many dotted names`);
  return parts.at(-1)!;
}

/** The tables whose rows pg_dump dumps with these options, in the exporting transaction. */
async function selectContent(client: pg.Client, options: PostgresStepOptions, ctx: JobContext): Promise<Selection> {
  const params: string[] = [];
  const param = (value: string) => `$${params.push(value)}`;

  let schemaSql = USER_SCHEMA;
  if (options.schemas?.length) {
    for (const pattern of options.schemas) {
      const { rows } = await client.query<{ n: string }>(`SELECT pg_catalog.count(*) AS n FROM pg_catalog.pg_namespace n WHERE ${USER_SCHEMA} AND n.nspname ~ $1`, [schemaRegex(pattern)]);
      if (Number(rows[0]!.n) === 0) {
        throw new LifeboatError('source_failed', `the schema pattern "${pattern}" (schemas) matches no schema in database "${options.database}"; check the plan`);
      }
    }
    schemaSql += ` AND (${options.schemas.map((p) => `n.nspname ~ ${param(schemaRegex(p))}`).join(' OR ')})`;
  }
  const schemaFilter: SqlCondition = { sql: schemaSql, params: [...params] };

  const excluded: string[] = [];
  for (const pattern of options.excludeTables ?? []) {
    excluded.push(excludedTable(pattern, param));
    const own: string[] = [];
    const condition = excludedTable(pattern, (value) => `$${own.push(value)}`);
    const matches = await client.query<{ n: string }>(
      `SELECT pg_catalog.count(*) AS n FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE ${condition}`,
      own,
    );
    if (Number(matches.rows[0]!.n) === 0) ctx.warn(`the table pattern "${pattern}" (excludeTables) matches no table in database "${options.database}"`);
  }

  const { rows } = await client.query<{ schema: string; name: string }>(
    `SELECT n.nspname AS schema, c.relname AS name
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND ${schemaSql} AND ${NOT_EXTENSION_MEMBER}
        ${excluded.length ? `AND NOT (${excluded.join(' OR ')})` : ''}
      ORDER BY n.nspname::text COLLATE "C", c.relname::text COLLATE "C"`,
    params,
  );
  return { tables: rows, schemaFilter };
}

/**
 * The SQL condition (on pg_class "c" and pg_namespace "n") for one --exclude-table pattern, as pg_dump reads
 * it: a pattern without a schema matches the tables visible on the user's search_path.
 */
function excludedTable(pattern: string, param: (value: string) => string): string {
  const parts = namePatternParts(pattern);
  if (parts.length > 3) throw new LifeboatError('source_failed', `the table pattern "${pattern}" (excludeTables) has too many dotted names`);
  return parts.length === 1
    ? `(c.relname ~ ${param(parts[0]!)} AND pg_catalog.pg_table_is_visible(c.oid))`
    : `(n.nspname ~ ${param(parts.at(-2)!)} AND c.relname ~ ${param(parts.at(-1)!)})`;
}

/**
 * Roles the dump refers to: owners of its schemas, relations, functions and types, and grantors and grantees
 * of their privileges and of default privileges. Built-in roles (pg_*) exist on every server and are left out.
 */
async function neededRoles(client: pg.Client, schemas: SqlCondition): Promise<string[]> {
  const { rows } = await client.query<{ role: string }>(
    `WITH ns AS (SELECT n.oid, n.nspowner, n.nspacl FROM pg_catalog.pg_namespace n WHERE ${schemas.sql}),
          rel AS (SELECT c.oid, c.relowner, c.relacl FROM pg_catalog.pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)),
          fn AS (SELECT p.proowner, p.proacl FROM pg_catalog.pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns)),
          acl AS (
            SELECT nspacl AS a FROM ns UNION ALL SELECT relacl FROM rel UNION ALL SELECT proacl FROM fn
            UNION ALL SELECT a.attacl FROM pg_catalog.pg_attribute a WHERE a.attrelid IN (SELECT oid FROM rel) AND a.attacl IS NOT NULL
            UNION ALL SELECT defaclacl FROM pg_catalog.pg_default_acl),
          ids AS (
            SELECT nspowner AS id FROM ns UNION SELECT relowner FROM rel UNION SELECT proowner FROM fn
            UNION SELECT t.typowner FROM pg_catalog.pg_type t WHERE t.typnamespace IN (SELECT oid FROM ns)
            UNION SELECT defaclrole FROM pg_catalog.pg_default_acl
            UNION SELECT (pg_catalog.aclexplode(a)).grantee FROM acl WHERE a IS NOT NULL
            UNION SELECT (pg_catalog.aclexplode(a)).grantor FROM acl WHERE a IS NOT NULL)
     SELECT DISTINCT r.rolname AS role FROM ids JOIN pg_catalog.pg_roles r ON r.oid = ids.id
      WHERE r.rolname !~ '^pg_' ORDER BY 1`,
    schemas.params,
  );
  return rows.map((r) => r.role);
}

async function installedExtensions(client: pg.Client): Promise<{ name: string; version: string }[]> {
  const { rows } = await client.query<{ name: string; version: string }>(
    'SELECT extname AS name, extversion AS version FROM pg_catalog.pg_extension ORDER BY extname::text COLLATE "C"',
  );
  return rows;
}

// ── restore ─────────────────────────────────────────────────────────────────────

function restorePostgres(input: Readable, target: RestoreTarget, options: RestoreOptions, ctx: JobContext, settings: PostgresSourceSettings): Promise<RestoreSummary> {
  const recorded = options.artifact?.metadata.kind === 'postgres' ? options.artifact.metadata : undefined;
  if (target.kind === 'dir') return restorePostgresToDir(input, target, recorded, options, ctx);
  if (target.kind === 'postgres') return restoreToPostgres(input, target, recorded, options, ctx, settings);
  input.destroy();
  return Promise.reject(new LifeboatError('restore_refused', `a postgres artifact cannot be restored into a ${target.kind} target`));
}

export function restoreError(err: unknown, signal: AbortSignal): LifeboatError {
  if (signal.aborted) return abortReason(signal);
  if (err instanceof LifeboatError) return err;
  return new LifeboatError('restore_failed', `the restore failed: ${err instanceof Error ? pgReason(err) : String(err)}`);
}

/**
 * Restores into a PostgreSQL database, created when missing; a database with tables is refused unless the
 * target says force. Then pg_restore, and the row counts and checksums compared with those recorded.
 *
 * Roles: a superuser creates the roles the dump needs and the server lacks, as NOLOGIN roles without
 * passwords (they can do nothing until someone gives them a login), so that owners and privileges come back
 * exactly as they were; a restore that leaves them out would silently hand every object to the restoring user
 * and drop every grant. A restoring user that is not a superuser can neither create those roles nor give
 * objects away, so it restores with --no-owner --no-privileges, and the summary says so.
 *
 * Parallelism: pg_restore -j needs a file it can seek in. Artifacts of at least parallelRestoreMinBytes (when
 * the temp dir has room for a copy) are spooled to a private temp file and restored with -j; index and
 * constraint builds, most of a big restore's time, then run side by side. Smaller ones stream into
 * pg_restore's stdin with --single-transaction: no local copy, and a failure leaves nothing half-restored.
 */
async function restoreToPostgres(
  input: Readable,
  target: PostgresTarget,
  recorded: PostgresMetadata | undefined,
  options: RestoreOptions,
  ctx: JobContext,
  settings: PostgresSourceSettings,
): Promise<RestoreSummary> {
  const endpoint: PgEndpoint = { host: target.host, port: target.port, user: target.user, database: target.database };
  const where = `${target.database}@${target.host}:${target.port}`;
  const notes: string[] = [];
  let passfile: Passfile | undefined;
  let spool: { path: string; remove(): Promise<void> } | undefined;
  let createdDatabase = false;
  let password: string | undefined;
  try {
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    password = await readPassword(target, 'restore_failed');
    const restoreTool = await restoreToolFor(recorded?.dumpVersion, settings.binDirs);
    const prepared = await prepareDatabase(endpoint, password, target.force, recorded, ctx);
    createdDatabase = prepared.created;
    notes.push(...prepared.notes);

    passfile = password === undefined ? undefined : await writePassfile(password);
    const size = options.artifact?.size;
    const parallel = size !== undefined && size >= (settings.parallelRestoreMinBytes ?? DEFAULT_PARALLEL_RESTORE_MIN_BYTES) && (await roomFor(size, ctx));
    const jobs = settings.restoreJobs ?? Math.min(4, Math.max(2, cpus().length));
    const args = [
      '--exit-on-error',
      '--no-password',
      `--dbname=${conninfo({ dbname: endpoint.database, host: endpoint.host, port: endpoint.port, user: endpoint.user, application_name: APPLICATION_NAME })}`,
      ...(prepared.keepOwners ? [] : ['--no-owner', '--no-privileges']),
      // Only what the dump holds is dropped and recreated; everything else in the database is left alone.
      ...(prepared.nonEmpty ? ['--clean', '--if-exists'] : []),
    ];
    if (parallel) {
      spool = await spoolToFile(input, ctx);
      args.push(`--jobs=${jobs}`, spool.path);
      notes.push(`restored in parallel (pg_restore -j ${jobs}) from a temporary copy`);
    } else {
      args.push('--single-transaction');
    }
    await runPgRestore(restoreTool, args, parallel ? undefined : input, target, passfile, ctx);
  } catch (err) {
    input.destroy();
    const error = restoreError(err, ctx.signal);
    if (!createdDatabase) throw error;
    throw new LifeboatError(error.code, error.message + (await dropCreatedDatabase(endpoint, password)), error.details);
  } finally {
    await passfile?.remove();
    await spool?.remove();
  }

  if (!recorded) {
    return { summary: [`restored into ${where}; no row counts were recorded with this artifact to compare`, ...notes].join('; '), skipped: [] };
  }
  ctx.progress('verifying row counts', 0);
  const verified = await verifyTables(endpoint, password, recorded.tables, ctx);
  const checksums = recorded.tables.filter((t) => t.checksum !== undefined).length;
  const summary = [
    `restored ${recorded.tables.length} tables, ${verified.rows} rows into ${where}; row counts match`,
    ...(checksums ? [`content checksums match (${checksums} table${checksums === 1 ? '' : 's'})`] : []),
    ...notes,
  ];
  return { summary: summary.join('; '), skipped: [] };
}

interface PreparedDatabase {
  created: boolean;
  /** It had tables: restore with --clean --if-exists (only with force). */
  nonEmpty: boolean;
  /** Restore owners and privileges (a superuser restores; missing roles were created). */
  keepOwners: boolean;
  notes: string[];
}

/**
 * Everything checked before anything is changed (emptiness, extensions, privileges), then the database and
 * the missing roles created. The target database itself is connected to first: a user whose pg_hba.conf
 * lines name only that database can restore into it; the maintenance database is needed only to create it.
 */
async function prepareDatabase(endpoint: PgEndpoint, password: string | undefined, force: boolean, recorded: PostgresMetadata | undefined, ctx: JobContext): Promise<PreparedDatabase> {
  const where = `${endpoint.database}@${endpoint.host}:${endpoint.port}`;
  let client: pg.Client;
  let exists = true;
  try {
    client = await connectPostgres(endpoint, password, 'restore_failed');
  } catch (err) {
    if (!(err instanceof PostgresConnectError) || err.sqlState !== INVALID_CATALOG_NAME) throw err;
    exists = false;
    client = await connectMaintenance(endpoint, password);
  }
  try {
    let relations = 0;
    if (exists) {
      const { rows } = await client.query<{ n: string }>(
        `SELECT pg_catalog.count(*) AS n FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ${USER_SCHEMA} AND ${NOT_EXTENSION_MEMBER}`,
      );
      relations = Number(rows[0]!.n);
      if (relations > 0 && !force) {
        throw new LifeboatError(
          'restore_refused',
          `the database ${where} is not empty (${relations} tables, views or sequences); pass --force to restore into it anyway` +
            ' (the objects the dump holds are then dropped and recreated, the others left alone), or restore into a new database',
        );
      }
    }

    const missingExtensions = await unavailableExtensions(client, recorded?.extensions ?? []);
    if (missingExtensions.length) {
      throw new LifeboatError(
        'restore_refused',
        `the dump needs the extension${missingExtensions.length === 1 ? '' : 's'} ${missingExtensions.join(', ')}, which the server at ${endpoint.host}:${endpoint.port} does not have (pg_available_extensions); install ${missingExtensions.length === 1 ? 'its package' : 'their packages'} there first`,
      );
    }

    const { rows: me } = await client.query<{ superuser: boolean; createdb: boolean }>(
      'SELECT rolsuper AS superuser, rolcreatedb AS createdb FROM pg_catalog.pg_roles WHERE rolname = current_user',
    );
    const superuser = me[0]?.superuser === true;
    if (!exists && !superuser && me[0]?.createdb !== true) {
      throw new LifeboatError('restore_refused', `the database ${where} does not exist, and the user "${endpoint.user}" may not create databases (CREATEDB); create it first`);
    }

    const notes: string[] = [];
    if (!exists) {
      // From template0: whatever was added to template1 on this server cannot collide with the dump's objects.
      await client.query(`CREATE DATABASE ${quoteIdent(endpoint.database)} TEMPLATE template0`);
      notes.push(`created the database ${endpoint.database}`);
      ctx.log.info(`created database ${endpoint.database} for the restore`);
    }
    if (relations > 0) notes.push(`--force: the dump's objects were dropped and recreated in the non-empty database`);

    if (superuser) {
      // Roles belong to the whole server: any database's connection creates them.
      const created = await createMissingRoles(client, recorded?.roles ?? []);
      if (created.length) notes.push(`created the missing role${created.length === 1 ? '' : 's'} ${created.join(', ')} as NOLOGIN without a password (give them a login, or restore the globals, before applications use them)`);
    } else {
      notes.push(`restored without owners and privileges (--no-owner --no-privileges): the user "${endpoint.user}" is not a superuser, so everything belongs to it`);
    }
    return { created: !exists, nonEmpty: relations > 0, keepOwners: superuser, notes };
  } catch (err) {
    if (err instanceof LifeboatError) throw err;
    throw new LifeboatError('restore_failed', `preparing ${where} for the restore failed: ${pgReason(err)}`);
  } finally {
    await client.end().catch(() => {});
  }
}

/** SQLSTATE of "database does not exist". */
const INVALID_CATALOG_NAME = '3D000';

/** A connection to the server's maintenance database ("postgres", else "template1"), as the target's user. */
async function connectMaintenance(endpoint: PgEndpoint, password: string | undefined): Promise<pg.Client> {
  try {
    return await connectPostgres({ ...endpoint, database: 'postgres' }, password, 'restore_failed');
  } catch (err) {
    if (!(err instanceof PostgresConnectError) || err.sqlState !== INVALID_CATALOG_NAME) throw err;
    return await connectPostgres({ ...endpoint, database: 'template1' }, password, 'restore_failed');
  }
}

async function unavailableExtensions(client: pg.Client, wanted: readonly { name: string; version: string }[]): Promise<string[]> {
  if (wanted.length === 0) return [];
  const { rows } = await client.query<{ name: string }>('SELECT name FROM pg_catalog.pg_available_extensions');
  const available = new Set(rows.map((r) => r.name));
  return wanted.filter((e) => !available.has(e.name)).map((e) => `${e.name} ${e.version}`);
}

async function createMissingRoles(client: pg.Client, roles: readonly string[]): Promise<string[]> {
  if (roles.length === 0) return [];
  const { rows } = await client.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])', [roles]);
  const existing = new Set(rows.map((r) => r.rolname));
  const created: string[] = [];
  for (const role of roles) {
    if (existing.has(role)) continue;
    try {
      await client.query(`CREATE ROLE ${quoteIdent(role)} NOLOGIN`);
      created.push(role);
    } catch (err) {
      // Made meanwhile by someone else: it exists, which is all the restore needs.
      if ((err as { code?: string }).code !== '42710') throw new LifeboatError('restore_failed', `cannot create the role "${role}" the dump needs: ${pgReason(err)}`);
    }
  }
  return created;
}

/** Whether the temp dir has room for a copy of `bytes` (and a margin); says so when it has not. */
async function roomFor(bytes: number, ctx: JobContext): Promise<boolean> {
  try {
    const fs = await statfs(tmpdir());
    const free = fs.bavail * fs.bsize;
    if (free >= bytes * 1.1 + 256 * 1024 * 1024) return true;
    ctx.warn(`not enough room in ${tmpdir()} (${formatBytes(free)} free) for a copy of the ${formatBytes(bytes)} dump: restoring in one job instead of in parallel`);
  } catch {
    // Not knowing is not a reason to fail: one job works everywhere.
  }
  return false;
}

/** The artifact in a private 0700 temp dir, 0600: removed by the caller whatever happens. */
async function spoolToFile(input: Readable, ctx: JobContext): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-pgrestore-'));
  const remove = () => rm(dir, { recursive: true, force: true });
  const file = path.join(dir, 'dump.pgdump');
  try {
    ctx.progress('copying the dump for a parallel restore', 0);
    await pipeline(input, createWriteStream(file, { flags: 'wx', mode: 0o600 }), { signal: ctx.signal });
  } catch (err) {
    await remove();
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    if (err instanceof LifeboatError) throw err;
    throw new LifeboatError('restore_failed', `cannot keep a temporary copy of the dump in ${tmpdir()}: ${fsReason(err)}`);
  }
  return { path: file, remove };
}

async function runPgRestore(tool: PgTool, args: string[], input: Readable | undefined, target: PostgresTarget, passfile: Passfile | undefined, ctx: JobContext): Promise<void> {
  ctx.progress('restoring', 0);
  const result = await runChild({
    tool: 'pg_restore',
    program: tool.path,
    args,
    ...(input ? { input } : {}),
    env: pgToolEnv({ passwordEnv: target.passwordEnv, passfile }),
    signal: ctx.signal,
    failureCode: 'restore_failed',
  });
  if (result.stderr) ctx.warn(`pg_restore: ${result.stderr}`);
}

/** Drops the database this restore created, after a failure: returns what to add to the error message. */
async function dropCreatedDatabase(endpoint: PgEndpoint, password: string | undefined): Promise<string> {
  try {
    const admin = await connectMaintenance(endpoint, password);
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(endpoint.database)}`);
    } finally {
      await admin.end().catch(() => {});
    }
    return ` (the database ${endpoint.database}, created for this restore, was dropped again)`;
  } catch {
    return ` (the database ${endpoint.database} was created for this restore and may hold part of it: drop it before trying again)`;
  }
}

/**
 * Row counts (and checksums where recorded) of the restored tables, compared with those of the backup, in
 * one snapshot. Any difference fails the restore, listing the tables.
 */
async function verifyTables(endpoint: PgEndpoint, password: string | undefined, tables: readonly TableRecord[], ctx: JobContext): Promise<{ rows: number }> {
  const client = await connectPostgres(endpoint, password, 'restore_failed');
  const problems: string[] = [];
  let rows = 0;
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    await setStableOutput(client);
    for (const table of tables) {
      if (ctx.signal.aborted) throw abortReason(ctx.signal);
      const name = displayName(table);
      const { rows: found } = await client.query<{ oid: string | null }>('SELECT pg_catalog.to_regclass($1)::oid AS oid', [qualifiedName(table)]);
      if (found[0]?.oid == null) {
        problems.push(`${name}: missing (${table.rows} rows recorded)`);
        continue;
      }
      const restored = await countRows(client, table);
      rows += restored;
      if (restored !== table.rows) {
        problems.push(`${name}: ${table.rows} rows recorded, ${restored} restored`);
      } else if (table.checksum !== undefined && (await tableChecksum(client, table)) !== table.checksum) {
        problems.push(`${name}: the content differs from the backup (checksum)`);
      }
    }
    await client.query('COMMIT');
  } catch (err) {
    throw restoreError(err, ctx.signal);
  } finally {
    await client.end().catch(() => {});
  }
  if (problems.length) {
    const shown = problems.slice(0, 20).join('; ');
    const more = problems.length > 20 ? `; and ${problems.length - 20} more` : '';
    throw new LifeboatError(
      'restore_failed',
      `the restored database ${endpoint.database}@${endpoint.host}:${endpoint.port} does not match the backup: ${shown}${more} (left in place for inspection)`,
      problems,
    );
  }
  return { rows };
}

// ── restore as a file ───────────────────────────────────────────────────────────

async function restorePostgresToDir(input: Readable, target: DirTarget, recorded: PostgresMetadata | undefined, options: RestoreOptions, ctx: JobContext): Promise<RestoreSummary> {
  const database = recorded?.database ?? options.artifact?.name ?? 'database';
  const written = await writeDumpFile(input, target, `${safeFileName(database)}.pgdump`, ctx, CUSTOM_FORMAT_MAGIC);
  const roles = recorded?.roles.length ? ` It needs the roles ${recorded.roles.join(', ')}: create them first, or add --no-owner --no-privileges.` : '';
  return {
    summary:
      `wrote ${written.name} (${formatBytes(written.bytes)}, pg_dump custom format) into ${target.path}; restore it by hand with:` +
      ` createdb NEWDB && pg_restore --exit-on-error --jobs=4 --dbname=NEWDB ${written.path}.${roles}`,
    skipped: [],
  };
}

/** A database name as a file name: no "/", no leading ".", nothing a shell or a listing would trip on. */
export function safeFileName(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[.-]+/, '_').slice(0, 100);
  return safe || 'database';
}

/**
 * Writes a dump as one 0600 file into a prepared directory target (the empty/force rule of prepareTarget):
 * first under a temporary name, then linked to its own name, which never replaces an existing file (a second
 * artifact of the same name becomes NAME-2). Checks the first bytes when `magic` is given.
 */
export async function writeDumpFile(input: Readable, target: DirTarget, fileName: string, ctx: JobContext, magic?: Buffer): Promise<{ name: string; path: string; bytes: number }> {
  let partial: string | undefined;
  try {
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    const prepared = await prepareTarget(target);
    partial = path.join(prepared.root, `.${fileName}.partial-${randomBytes(6).toString('hex')}`);
    let bytes = 0;
    let head = Buffer.alloc(0);
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        if (magic && head.length < magic.length) {
          head = Buffer.concat([head, chunk.subarray(0, magic.length - head.length)]);
          if (!magic.subarray(0, head.length).equals(head)) {
            return callback(new LifeboatError('restore_failed', `the artifact is not what its kind says (its first bytes are not "${magic.toString()}")`));
          }
        }
        callback(null, chunk);
      },
    });
    await pipeline(input, counter, createWriteStream(partial, { flags: 'wx', mode: 0o600 }), { signal: ctx.signal });
    if (bytes === 0) throw new LifeboatError('restore_failed', 'the artifact is empty');
    const ext = path.extname(fileName);
    const stem = fileName.slice(0, fileName.length - ext.length);
    for (let n = 1; ; n++) {
      const name = n === 1 ? fileName : `${stem}-${n}${ext}`;
      const final = path.join(prepared.root, name);
      try {
        await link(partial, final);
      } catch (err) {
        if (isCode(err, 'EEXIST') && n < 1000) continue;
        throw err;
      }
      await unlink(partial);
      partial = undefined;
      if (prepared.created) await chmod(prepared.root, 0o755);
      return { name, path: path.join(target.path, name), bytes };
    }
  } catch (err) {
    input.destroy();
    if (partial) await rm(partial, { force: true });
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    if (err instanceof LifeboatError) throw err;
    throw new LifeboatError('restore_failed', `cannot write the dump into ${target.path}: ${fsReason(err)}`);
  }
}

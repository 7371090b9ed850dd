import { mkdtemp, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { LifeboatError, redact, type ErrorCode, type TableRecord } from '@lifeboat/shared';
import { childEnv, runChild } from '../child.js';
import { abortReason } from '../fs-errors.js';
import { executable } from '../tools.js';

/**
 * What the PostgreSQL source, its restores and the scratch instances share: finding the client and server
 * programs (pg_dump, pg_restore, pg_dumpall, psql, initdb, postgres) and their versions, the password file
 * the tools read, and `pg` connections with errors people can act on.
 */

/** Where Debian and Ubuntu (and the PGDG packages) install each major version: /usr/lib/postgresql/<major>/bin. */
export const PG_INSTALL_ROOT = '/usr/lib/postgresql';

export type PgProgram = 'pg_dump' | 'pg_dumpall' | 'pg_restore' | 'psql' | 'initdb' | 'postgres' | 'pg_ctl';

export interface PgTool {
  program: PgProgram;
  path: string;
  /** As the tool prints it: "15.14". */
  version: string;
  /** 15 for "15.14"; 9.6 for "9.6.24" (before version 10 the major version had two parts). */
  major: number;
}

/** Where to look for the programs: the versioned install directories (newest first), then PATH. */
export async function pgBinDirs(root = PG_INSTALL_ROOT): Promise<string[]> {
  const versions = (await readdir(root).catch(() => [] as string[])).filter((v) => /^\d+(\.\d+)?$/.test(v));
  versions.sort((a, b) => Number(b) - Number(a));
  const installed = versions.map((v) => path.posix.join(root, v, 'bin'));
  const onPath = (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').filter((d) => d.startsWith('/'));
  return [...installed, ...onPath];
}

/** "pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)" → 15.14; null when the line says no version. */
export function parseToolVersion(line: string): { version: string; major: number } | null {
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(line) ?? /\b(\d+)(?:\.(\d+))?(?:\.(\d+))?\b/.exec(line);
  if (!match) return null;
  const [, first, second, third] = match;
  const version = [first, second, third].filter((p) => p !== undefined).join('.');
  const major = Number(first) >= 10 ? Number(first) : Number(`${first}.${second ?? 0}`);
  return { version, major };
}

/** The major version of a server from server_version_num (150014 → 15, 90624 → 9.6). */
export function serverMajor(versionNum: number): number {
  return versionNum >= 100000 ? Math.floor(versionNum / 10000) : Math.floor(versionNum / 100) / 100;
}


/** Every copy of `program` in `dirs` (default pgBinDirs()), each once, newest version first. */
export async function findPgTools(program: PgProgram, dirs?: readonly string[]): Promise<PgTool[]> {
  const found: PgTool[] = [];
  const seen = new Set<string>();
  for (const dir of dirs ?? (await pgBinDirs())) {
    const candidate = path.posix.join(dir, program);
    if (!(await executable(candidate))) continue;
    const real = await realpath(candidate).catch(() => candidate);
    if (seen.has(real)) continue;
    seen.add(real);
    const result = await runChild({ tool: program, program: candidate, args: ['--version'], timeoutMs: 10_000 }).catch(() => null);
    const parsed = result ? parseToolVersion(result.stdout.split('\n')[0] ?? '') : null;
    if (parsed) found.push({ program, path: candidate, ...parsed });
  }
  // Stable: among equal versions the first directory searched wins.
  return found.sort((a, b) => compareVersions(b.version, a.version));
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function listed(tools: readonly PgTool[]): string {
  return tools.length === 0 ? 'none was found' : `found ${tools.map((t) => `${t.version} (${t.path})`).join(', ')}`;
}

/**
 * The pg_dump (or pg_dumpall) for a server: its major version must be at least the server's (an older one
 * refuses to dump a newer server). Of those, the one closest to the server: the archive it writes is then
 * readable by the oldest pg_restore that can restore it.
 */
export async function dumpToolFor(program: 'pg_dump' | 'pg_dumpall', server: ServerVersion, dirs?: readonly string[]): Promise<PgTool> {
  const tools = await findPgTools(program, dirs);
  const usable = tools.filter((t) => t.major >= server.major);
  const closestMajor = Math.min(...usable.map((t) => t.major));
  // The newest minor release of that major; among equals, the install directory before PATH (where Debian's
  // /usr/bin/pg_dump is a wrapper script that picks a version by its own rules).
  const closest = usable.find((t) => t.major === closestMajor);
  if (!closest) {
    throw new LifeboatError(
      'source_failed',
      `the server runs PostgreSQL ${server.version} and needs ${program} ${server.major} or newer, but ${listed(tools)}` +
        ` (looked in ${PG_INSTALL_ROOT}/*/bin and PATH); install the PostgreSQL ${server.major} client programs on this agent`,
    );
  }
  return closest;
}

/**
 * The pg_restore for an archive written by pg_dump `dumpVersion`: a pg_restore reads archives of its own and
 * older versions only. The newest installed, which reads every older archive format.
 */
export async function restoreToolFor(dumpVersion: string | undefined, dirs?: readonly string[]): Promise<PgTool> {
  const tools = await findPgTools('pg_restore', dirs);
  const needed = dumpVersion ? parseToolVersion(dumpVersion)?.major : undefined;
  const newest = tools[0];
  if (!newest || (needed !== undefined && newest.major < needed)) {
    const wanted = needed === undefined ? 'pg_restore' : `pg_restore ${needed} or newer`;
    throw new LifeboatError(
      'restore_failed',
      `the dump was written by pg_dump ${dumpVersion ?? '(version not recorded)'} and needs ${wanted}, but ${listed(tools)}` +
        ` (looked in ${PG_INSTALL_ROOT}/*/bin and PATH); install the PostgreSQL${needed === undefined ? '' : ` ${needed}`} client programs on this agent`,
    );
  }
  return newest;
}

// ── passwords ───────────────────────────────────────────────────────────────────

/** Where a password comes from on the agent, as plans and restore targets name it. */
export interface PasswordSource {
  passwordFile?: string | undefined;
  passwordEnv?: string | undefined;
}

/**
 * The password a step or target names: the content of passwordFile (without its final line break) or the
 * agent's environment variable passwordEnv. undefined when it names none. Never logged, never in argv.
 */
export async function readPassword(source: PasswordSource, code: ErrorCode): Promise<string | undefined> {
  let password: string;
  if (source.passwordFile) {
    try {
      password = (await readFile(source.passwordFile, 'utf8')).replace(/\r?\n$/, '');
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new LifeboatError(code, `cannot read the password file ${source.passwordFile} (passwordFile): ${reason}`);
    }
    if (password === '') throw new LifeboatError(code, `the password file ${source.passwordFile} (passwordFile) is empty`);
    if (/[\r\n]/.test(password)) throw new LifeboatError(code, `the password file ${source.passwordFile} (passwordFile) must hold the password on a single line`);
    return password;
  }
  if (source.passwordEnv) {
    const value = process.env[source.passwordEnv];
    if (value === undefined || value === '') {
      throw new LifeboatError(code, `the environment variable ${source.passwordEnv} (passwordEnv) is not set in the agent's environment`);
    }
    if (/[\r\n]/.test(value)) throw new LifeboatError(code, `the environment variable ${source.passwordEnv} (passwordEnv) must hold the password on a single line`);
    return value;
  }
  return undefined;
}

export interface Passfile {
  /** For the child's PGPASSFILE. */
  path: string;
  /** Removes the file and its private directory; safe to call more than once. */
  remove(): Promise<void>;
}

/** A password file line escapes ":" and "\" with a backslash (libpq). */
function passfileField(value: string): string {
  return value.replace(/[\\:]/g, (c) => `\\${c}`);
}

/**
 * A 0600 password file in a private 0700 directory, for one run of one tool. It matches any host, port,
 * database and user (`*`): it exists only for the one connection the tool is told to make, so there is
 * nothing else it could match, and a socket directory or "localhost" need no special spelling.
 */
export async function writePassfile(password: string): Promise<Passfile> {
  if (/[\r\n]/.test(password)) throw new LifeboatError('bad_request', "a password with a line break cannot be written to PostgreSQL's password file");
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-pgpass-'));
  const file = path.join(dir, 'pgpass');
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    await writeFile(file, `*:*:*:*:${passfileField(password)}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    await remove();
    throw err;
  }
  return { path: file, remove };
}

/**
 * The environment of a PostgreSQL tool: childEnv's harmless variables, without the plan's passwordEnv, with
 * PGPASSFILE when there is a password, and English messages (they end up in error messages).
 */
export function pgToolEnv(options: { passwordEnv?: string | undefined; passfile?: Passfile | undefined }): NodeJS.ProcessEnv {
  return childEnv({
    strip: options.passwordEnv ? [options.passwordEnv] : [],
    set: { LC_MESSAGES: 'C', ...(options.passfile ? { PGPASSFILE: options.passfile.path } : {}) },
  });
}

/**
 * A libpq connection string (key='value' …). Every value is quoted, with "'" and "\" escaped, so no value can
 * end its field or add another; and a string that holds "=" is always read as a connection string, never as a
 * database name, so the database name cannot be mistaken for one either (DESIGN §11).
 */
export function conninfo(params: Readonly<Record<string, string | number | undefined>>): string {
  return Object.entries(params)
    .filter((entry): entry is [string, string | number] => entry[1] !== undefined)
    .map(([key, value]) => `${key}='${String(value).replace(/[\\']/g, (c) => `\\${c}`)}'`)
    .join(' ');
}

// ── connections ─────────────────────────────────────────────────────────────────

export interface PgEndpoint {
  host: string;
  port: number;
  user: string;
  database: string;
}

export const APPLICATION_NAME = 'lifeboat';
const CONNECT_TIMEOUT_MS = 15_000;

/** "shop" on 127.0.0.1:5432 as "postgres" — how a connection is named in messages. */
export function describeEndpoint(e: PgEndpoint): string {
  return `database "${e.database}" on ${e.host}:${e.port} as user "${e.user}"`;
}

/** A failed connection; `sqlState` tells apart, e.g., a missing database (3D000) from a wrong password (28P01). */
export class PostgresConnectError extends LifeboatError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly sqlState: string | undefined,
  ) {
    super(code, message);
  }
}

class NoPasswordGiven extends Error {
  constructor() {
    super('no password given');
  }
}

/** Why a connection or a query failed, in words, without anything secret (pg's messages carry no argv). */
export function pgReason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused (is PostgreSQL running and listening on that address and port?)';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'the host name does not resolve';
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `the host cannot be reached (${code})`;
    case 'ENOENT':
      return 'no server socket in that directory (is PostgreSQL running, and is the port right?)';
    case 'ECONNRESET':
      return 'the server closed the connection';
  }
  if (err instanceof NoPasswordGiven) return 'the server asks for a password, and none was given (set passwordFile or passwordEnv)';
  if (/timeout/i.test(err.message) && /connect/i.test(err.message)) return `no answer within ${CONNECT_TIMEOUT_MS / 1000} s`;
  return redact(err.message);
}

/**
 * `pg`, loaded on first use: a backup of files or a restore never needs it, and its modules would stay in the
 * agent's heap (about 1.8 MB), which every full collection of a long job marks again.
 */
export async function loadPg(): Promise<typeof pg> {
  return (await import('pg')).default;
}

/**
 * Opens a `pg` connection. The password is handed over in memory (never PGPASSWORD from the agent's
 * environment: the tools never see that either). A failure is a LifeboatError with `code` that names the
 * server, the database and the user. Errors of an idle connection (the server going away) are kept, not thrown.
 */
export async function connectPostgres(endpoint: PgEndpoint, password: string | undefined, code: ErrorCode): Promise<pg.Client> {
  const client = new (await loadPg()).Client({
    host: endpoint.host,
    port: endpoint.port,
    user: endpoint.user,
    database: endpoint.database,
    // A function, so that pg never falls back to PGPASSWORD or ~/.pgpass: what the tools get is what pg gets.
    // Called only when the server asks for a password.
    password: () => (password === undefined ? Promise.reject(new NoPasswordGiven()) : password),
    application_name: APPLICATION_NAME,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  });
  client.on('error', () => {
    // A connection lost while idle: the next query fails with it, which is where it is reported.
  });
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    const sqlState = typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : undefined;
    throw new PostgresConnectError(code, `cannot connect to PostgreSQL ${describeEndpoint(endpoint)}: ${pgReason(err)}`, sqlState);
  }
  return client;
}

/**
 * How every PostgreSQL backup starts: connected as the step says, so a wrong password, an unreachable server or
 * a missing database fails here, before any byte moves.
 */
export async function connectForBackup(
  options: { host: string; port: number; user: string; database: string } & PasswordSource,
  signal: AbortSignal,
): Promise<{ endpoint: PgEndpoint; password: string | undefined; client: pg.Client }> {
  if (signal.aborted) throw abortReason(signal);
  const endpoint: PgEndpoint = { host: options.host, port: options.port, user: options.user, database: options.database };
  const password = await readPassword(options, 'source_failed');
  const client = await connectPostgres(endpoint, password, 'source_failed');
  return { endpoint, password, client };
}

export interface ServerVersion {
  /** "15.14", without the distribution's suffix. */
  version: string;
  major: number;
}

export async function serverVersion(client: pg.Client): Promise<ServerVersion> {
  const { rows } = await client.query<{ num: string; version: string }>(
    "SELECT pg_catalog.current_setting('server_version_num') AS num, pg_catalog.current_setting('server_version') AS version",
  );
  const row = rows[0]!;
  return { version: row.version.split(/\s/)[0] ?? row.version, major: serverMajor(Number(row.num)) };
}

/** An identifier as SQL writes it: always double-quoted, inner quotes doubled. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function qualifiedName(table: { schema?: string | undefined; name: string }): string {
  return table.schema === undefined ? quoteIdent(table.name) : `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
}

/** A table as messages show it: public.orders, sales."Big Table". */
export function displayName(table: { schema?: string | undefined; name: string }): string {
  const part = (s: string) => (/^[a-z_][a-z0-9_]*$/.test(s) ? s : quoteIdent(s));
  return table.schema === undefined ? part(table.name) : `${part(table.schema)}.${part(table.name)}`;
}

// ── table contents ──────────────────────────────────────────────────────────────

/** Tables above this many rows get no checksum: sorting the row hashes of bigger ones costs too much. */
export const CHECKSUM_MAX_ROWS = 1_000_000;

/**
 * Settings that make a row's text the same on any server and session (time zone, date and interval styles,
 * float digits, bytea output), so a checksum at backup and one after a restore can be compared.
 * Transaction-local: call inside BEGIN.
 */
export async function setStableOutput(client: pg.Client): Promise<void> {
  await client.query(
    "SELECT pg_catalog.set_config('TimeZone', 'UTC', true), pg_catalog.set_config('DateStyle', 'ISO, YMD', true)," +
      " pg_catalog.set_config('IntervalStyle', 'postgres', true), pg_catalog.set_config('extra_float_digits', '1', true)," +
      " pg_catalog.set_config('bytea_output', 'hex', true)",
  );
}

/** Exact rows of one table, without rows of tables that inherit from it (as pg_dump copies it). */
export async function countRows(client: pg.Client, table: { schema?: string | undefined; name: string }): Promise<number> {
  const { rows } = await client.query<{ n: string }>(`SELECT pg_catalog.count(*) AS n FROM ONLY ${qualifiedName(table)}`);
  return Number(rows[0]!.n);
}

/**
 * md5 over the md5 of each row's text, in the order of those hashes (byte order, whatever the collation):
 * the same rows give the same checksum on any server. Needs setStableOutput in the same transaction.
 */
export async function tableChecksum(client: pg.Client, table: { schema?: string | undefined; name: string }): Promise<string> {
  const { rows } = await client.query<{ checksum: string }>(
    `SELECT pg_catalog.md5(coalesce(pg_catalog.string_agg(h, '' ORDER BY h COLLATE "C"), '')) AS checksum` +
      ` FROM (SELECT pg_catalog.md5(t::text) AS h FROM ONLY ${qualifiedName(table)} AS t) AS hashes`,
  );
  return rows[0]!.checksum;
}

/** Rows, and the checksum for tables of at most `checksumMaxRows` rows. */
export async function tableRecord(client: pg.Client, table: { schema: string; name: string }, checksumMaxRows = CHECKSUM_MAX_ROWS): Promise<TableRecord> {
  const rows = await countRows(client, table);
  const record: TableRecord = { schema: table.schema, name: table.name, rows };
  if (rows <= checksumMaxRows) record.checksum = await tableChecksum(client, table);
  return record;
}

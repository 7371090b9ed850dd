import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Connection, RowDataPacket } from 'mysql2/promise';
import { LifeboatError, redact, type ErrorCode } from '@lifeboat/shared';
import { isCode } from '../fs-errors.js';
import { executable } from '../tools.js';

/**
 * What the mysql source and the scratch MariaDB share: finding mariadb-dump/mysqldump and the mariadb/mysql
 * client, passing credentials through a 0600 --defaults-extra-file, and mysql2 connections whose failures
 * read as what to fix.
 */

export interface MysqlTool {
  /** "mariadb-dump", "mysqldump", "mariadb" or "mysql". */
  name: string;
  path: string;
  /** The distribution's version, e.g. "10.11.19-MariaDB" or "8.0.36". */
  version: string;
}

/** Preferred first: MariaDB's own names, then MySQL's (MariaDB also installs them as symlinks). */
const TOOL_NAMES = { dump: ['mariadb-dump', 'mysqldump'], client: ['mariadb', 'mysql'] } as const;
const EXTRA_DIRS = ['/usr/local/bin', '/usr/bin', '/bin', '/usr/local/mysql/bin', '/opt/mysql/bin'];

const found = new Map<string, Promise<MysqlTool | null>>();

/** The dump tool or the client on this agent, or null. Looked up once per process. */
export function findMysqlTool(kind: keyof typeof TOOL_NAMES): Promise<MysqlTool | null> {
  let tool = found.get(kind);
  if (!tool) {
    tool = lookUp(TOOL_NAMES[kind]);
    found.set(kind, tool);
  }
  return tool;
}

/** Like findMysqlTool, but a missing tool is a LifeboatError that says what to install. */
export async function requireMysqlTool(kind: keyof typeof TOOL_NAMES, code: ErrorCode): Promise<MysqlTool> {
  const tool = await findMysqlTool(kind);
  if (tool) return tool;
  const names = TOOL_NAMES[kind].join(' or ');
  throw new LifeboatError(code, `no ${names} on this agent: install the MariaDB client tools (Debian: apt-get install mariadb-client)`);
}

async function lookUp(names: readonly string[]): Promise<MysqlTool | null> {
  const dirs = [...new Set([...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/')), ...EXTRA_DIRS])];
  for (const name of names) {
    for (const dir of dirs) {
      const path = join(dir, name);
      if (!(await executable(path))) continue;
      return { name, path, version: await toolVersion(path) };
    }
  }
  return null;
}


/**
 * "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu" → "10.11.19-MariaDB";
 * "mysqldump  Ver 8.0.36 for Linux on x86_64" → "8.0.36" (MySQL 8 has no Distrib).
 */
export function parseToolVersion(output: string): string {
  const line = output.split('\n')[0]?.trim() ?? '';
  const distrib = /\bDistrib\s+([^\s,]+)/.exec(line);
  if (distrib) return distrib[1]!;
  const ver = /\bVer\s+([^\s,]+)/.exec(line);
  return ver ? ver[1]! : line || 'unknown';
}

function toolVersion(path: string): Promise<string> {
  return new Promise((resolve) => {
    execFile(path, ['--version'], { timeout: 5000, env: childEnv() }, (_err, stdout) => resolve(parseToolVersion(String(stdout ?? ''))));
  });
}

// ── Credentials ───────────────────────────────────────────────────────────────

export interface PasswordSource {
  passwordFile?: string;
  passwordEnv?: string;
}

/**
 * The password a plan or a restore target points at, from a file on the agent (its first line) or the
 * agent's environment; undefined when neither is given (the server may need none, or ~/.my.cnf has it).
 */
export async function readPassword(source: PasswordSource, code: ErrorCode): Promise<string | undefined> {
  if (source.passwordFile) {
    let text: string;
    try {
      text = await readFile(source.passwordFile, 'utf8');
    } catch (err) {
      const reason = isCode(err, 'ENOENT') ? 'it does not exist' : isCode(err, 'EACCES') ? 'permission denied' : 'it cannot be read';
      throw new LifeboatError(code, `cannot read the password file ${source.passwordFile}: ${reason}`);
    }
    // The first line, without its line ending: editors add a final newline.
    return text.split(/\r?\n/)[0] ?? '';
  }
  if (source.passwordEnv) {
    const value = process.env[source.passwordEnv];
    if (value === undefined) throw new LifeboatError(code, `the environment variable ${source.passwordEnv} (passwordEnv) is not set for the agent`);
    return value;
  }
  return undefined;
}

/**
 * The environment for a child process: the agent's, without the variable a password came from and without
 * MYSQL_PWD / MYSQL_HOST, which the client would otherwise read in place of (or beside) the defaults file.
 */
export function childEnv(passwordEnv?: string): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (passwordEnv) delete env[passwordEnv];
  delete env.MYSQL_PWD;
  delete env.MYSQL_HOST;
  delete env.MYSQL_TCP_PORT;
  delete env.MYSQL_UNIX_PORT;
  return env;
}

export interface MysqlServer {
  /** A host name or IP address, or the absolute path of the server's Unix socket. */
  host: string;
  port: number;
  user: string;
  password?: string;
}

/** "user@host:port" for messages. */
export function describeServer(server: Pick<MysqlServer, 'host' | 'port' | 'user'>): string {
  return server.host.startsWith('/') ? `${server.user}@${server.host}` : `${server.user}@${server.host}:${server.port}`;
}

/** A value in an option file: quoted, so "#", ";", spaces and quotes in a password survive. */
function optionValue(value: string): string {
  return '"' + value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t') + '"';
}

/** The [client] option group that carries the connection, password included. */
export function defaultsFileContent(server: MysqlServer): string {
  const lines = ['[client]', `user=${optionValue(server.user)}`];
  if (server.password !== undefined) lines.push(`password=${optionValue(server.password)}`);
  if (server.host.startsWith('/')) {
    lines.push(`socket=${optionValue(server.host)}`);
  } else {
    // TCP even for "localhost", which the client would otherwise take as "the default socket": the same
    // server the mysql2 checks talked to.
    lines.push(`host=${optionValue(server.host)}`, `port=${server.port}`, 'protocol=TCP');
  }
  return lines.join('\n') + '\n';
}

export interface DefaultsFile {
  /** "--defaults-extra-file=…": it must be the first argument of the tool. */
  argument: string;
  path: string;
  /** Deletes the file and its private directory; safe to call more than once. */
  remove(): Promise<void>;
}

/**
 * Writes the connection and password to a 0600 file in a private 0700 directory, for a tool's
 * --defaults-extra-file (the password never goes to argv or the environment). The caller removes it in
 * `finally`, whatever happens.
 */
export async function writeDefaultsFile(server: MysqlServer): Promise<DefaultsFile> {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-mysql-'));
  const path = join(dir, 'client.cnf');
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    await writeFile(path, defaultsFileContent(server), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    await remove();
    throw err;
  }
  return { argument: `--defaults-extra-file=${path}`, path, remove };
}

// ── mysql2 ────────────────────────────────────────────────────────────────────

const CONNECT_TIMEOUT_MS = 15_000;

/**
 * A mysql2 connection; a failure is a LifeboatError with `code` that names the server and says why
 * (wrong password, nothing listening, unknown host…), never the password.
 */
export async function connectMysql(server: MysqlServer & { database?: string }, code: ErrorCode): Promise<Connection> {
  try {
    // Loaded on first use, as pg is (db/postgres-tools.ts loadPg): files-only jobs never need it.
    const { createConnection } = await import('mysql2/promise');
    return await createConnection({
      ...(server.host.startsWith('/') ? { socketPath: server.host } : { host: server.host, port: server.port }),
      user: server.user,
      password: server.password ?? '',
      ...(server.database !== undefined ? { database: server.database } : {}),
      connectTimeout: CONNECT_TIMEOUT_MS,
      charset: 'utf8mb4',
      supportBigNumbers: true,
      bigNumberStrings: true,
      dateStrings: true,
      multipleStatements: false,
    });
  } catch (err) {
    throw new LifeboatError(code, `cannot connect to MySQL/MariaDB as ${describeServer(server)}: ${mysqlErrorReason(err)}`);
  }
}

/** Why a mysql2 call failed, in words, safe to show. */
export function mysqlErrorReason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & { code?: string; sqlMessage?: string };
  switch (e.code) {
    case 'ECONNREFUSED':
      return 'connection refused (is the server running and listening there?)';
    case 'ETIMEDOUT':
      return 'timed out (a firewall, or the wrong address?)';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'unknown host';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
    case 'ENOENT':
      return 'no socket at that path';
    case 'PROTOCOL_CONNECTION_LOST':
      return 'the server closed the connection';
  }
  // "Access denied for user 'x'@'h' (using password: YES)" names no secret, and redact would mangle it.
  if (e.code === 'ER_ACCESS_DENIED_ERROR' || e.code === 'ER_DBACCESS_DENIED_ERROR') return e.sqlMessage ?? e.message;
  return redact(e.sqlMessage ?? e.message);
}

/** Runs a query; a failure is a LifeboatError with `code` saying what was being done. */
export async function query<T extends RowDataPacket>(connection: Connection, sql: string, values: unknown[], code: ErrorCode, doing: string): Promise<T[]> {
  try {
    const [rows] = await connection.query<T[]>(sql, values);
    return rows;
  } catch (err) {
    throw new LifeboatError(code, `${doing} failed: ${mysqlErrorReason(err)}`);
  }
}

/** The server's own schemas: never user data, and not restorable into another server (see the mysql source). */
export const SYSTEM_SCHEMAS: ReadonlySet<string> = new Set(['information_schema', 'performance_schema', 'sys', 'mysql']);

/** The databases that hold user data, sorted. */
export async function listUserDatabases(connection: Connection, code: ErrorCode): Promise<string[]> {
  const rows = await query<RowDataPacket & { name: string }>(connection, 'SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA', [], code, 'listing the databases');
  // "#mysql50#…" are directories in the data dir that are no databases (lost+found on a mount point).
  return rows.map((r) => String(r.name)).filter((name) => !SYSTEM_SCHEMAS.has(name) && !name.startsWith('#mysql50#')).sort();
}

/** The base tables of a database (no views, no sequences). */
export async function listTables(connection: Connection, database: string, code: ErrorCode): Promise<string[]> {
  const rows = await query<RowDataPacket & { name: string }>(
    connection,
    "SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    [database],
    code,
    `listing the tables of ${database}`,
  );
  return rows.map((r) => String(r.name));
}

export async function databaseExists(connection: Connection, database: string, code: ErrorCode): Promise<boolean> {
  const rows = await query<RowDataPacket>(connection, 'SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [database], code, `looking for database ${database}`);
  return rows.length > 0;
}

/** Exact row count of one table (COUNT(*), not the statistics' estimate). */
export async function countRows(connection: Connection, database: string, table: string, code: ErrorCode): Promise<number> {
  const rows = await query<RowDataPacket & { n: string }>(connection, 'SELECT COUNT(*) AS n FROM ??.??', [database, table], code, `counting the rows of ${database}.${table}`);
  return Number(rows[0]?.n ?? 0);
}

export async function serverVersion(connection: Connection, code: ErrorCode): Promise<string> {
  const rows = await query<RowDataPacket & { v: string }>(connection, 'SELECT VERSION() AS v', [], code, 'asking the server version');
  return String(rows[0]?.v ?? 'unknown');
}

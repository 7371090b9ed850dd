import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, opendir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import type { RowDataPacket } from 'mysql2/promise';
import { formatBytes, LifeboatError, redact, type ArtifactMetadata, type DrillCheckResult, type TableRecord } from '@lifeboat/shared';
import { childEnv, runChild } from '../child.js';
import { connectMysql, mysqlErrorReason } from '../db/mysql-tools.js';
import { connectPostgres, pgReason } from '../db/postgres-tools.js';
import { ManifestLine } from '../archive/files-cache.js';
import { abortReason, fsReason, isCode, shown } from '../fs-errors.js';

/**
 * What a drill checks beyond the restores themselves: the files manifest against the restored tree, and the
 * plan's own checks (`sql`, `command`), each a DrillCheckResult with a detail a person can act on.
 */

/** The protocol's bounds (DrillCheckResult): longer names and details are cut, never refused by the server. */
const MAX_NAME = 500;
const MAX_DETAIL = 4000;

export function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

export function checkResult(name: string, ok: boolean, detail: string): DrillCheckResult {
  return { name: clip(name, MAX_NAME), ok, detail: clip(detail, MAX_DETAIL) };
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** "public.orders 5000, public.users 12" — the tables a restore compared, as recorded at backup. */
export function describeTables(tables: readonly TableRecord[]): string {
  if (tables.length === 0) return 'no tables were recorded';
  const shown = tables.slice(0, 200).map((t) => `${t.schema ? `${t.schema}.` : ''}${t.name} ${t.rows}`);
  return `${shown.join(', ')}${tables.length > 200 ? `, and ${tables.length - 200} more tables` : ''}`;
}

// ── files: the manifest ─────────────────────────────────────────────────────────

type FilesMetadata = Extract<ArtifactMetadata, { kind: 'files' }>;
type TreeCounts = Omit<FilesMetadata, 'kind' | 'paths' | 'manifest'>;

/** The extraction refuses symlinks that lead out of the restore target (restore/extract.ts); their skip lines end so. */
const LINK_OUTSIDE_TARGET = /: symbolic link to .* points outside the restore target$/;

/**
 * Compares the tree restored under `restoreRoot` (each archived path P at restoreRoot + P) with what the
 * backup recorded: entries, files, directories, symbolic links and file bytes. Hard links count as files
 * and their bytes once, as the archive does. Symbolic links the extraction refused because they lead out of
 * the scratch directory (absolute targets such as /var/www/releases/5) were in the verified archive: they are
 * accounted for, and said so.
 *
 * Then, when the backup recorded a per-file manifest (`manifestFile`: the copy the restore kept of it), every
 * entry in it against the restored tree: type, size, SHA-256 of each file's content, symbolic link targets.
 */
export async function checkManifest(
  restoreRoot: string,
  recorded: FilesMetadata,
  skipped: readonly string[],
  signal: AbortSignal,
  manifestFile?: string,
): Promise<{ ok: boolean; detail: string }> {
  const counts: TreeCounts = { entries: 0, files: 0, directories: 0, symlinks: 0, fileBytes: 0 };
  const missing: string[] = [];
  const other: string[] = [];
  const inodes = new Set<string>();
  for (const root of recorded.paths) {
    const top = path.posix.join(restoreRoot, root);
    const pending = [top];
    while (pending.length > 0) {
      if (signal.aborted) throw abortReason(signal);
      const p = pending.pop()!;
      let info;
      try {
        info = await lstat(p);
      } catch (err) {
        if (p === top && isCode(err, 'ENOENT')) {
          missing.push(root);
          continue;
        }
        return { ok: false, detail: `cannot read the restored tree at ${p}: ${fsReason(err)}` };
      }
      counts.entries++;
      if (info.isDirectory()) {
        counts.directories++;
        try {
          for await (const child of await opendir(p)) pending.push(path.posix.join(p, child.name));
        } catch (err) {
          return { ok: false, detail: `cannot read the restored directory ${p}: ${fsReason(err)}` };
        }
      } else if (info.isFile()) {
        counts.files++;
        const inode = `${info.dev}:${info.ino}`;
        if (info.nlink < 2 || !inodes.has(inode)) counts.fileBytes += info.size;
        if (info.nlink > 1) inodes.add(inode);
      } else if (info.isSymbolicLink()) {
        counts.symlinks++;
      } else {
        other.push(p.slice(restoreRoot.length));
      }
    }
  }

  const linksLeftOut = skipped.filter((line) => LINK_OUTSIDE_TARGET.test(line)).length;
  const expected: TreeCounts = {
    entries: recorded.entries - linksLeftOut,
    files: recorded.files,
    directories: recorded.directories,
    symlinks: recorded.symlinks - linksLeftOut,
    fileBytes: recorded.fileBytes,
  };
  const differences = (Object.keys(expected) as (keyof TreeCounts)[])
    .filter((key) => expected[key] !== counts[key])
    .map((key) => `${key}: ${expected[key]} recorded${linksLeftOut && (key === 'entries' || key === 'symlinks') ? ` (less ${linksLeftOut} links left out)` : ''}, ${counts[key]} restored`);
  const notes: string[] = [];
  if (linksLeftOut > 0) {
    notes.push(
      `${linksLeftOut} symbolic link${linksLeftOut === 1 ? '' : 's'} leading out of the restored tree (absolute targets) ${linksLeftOut === 1 ? 'was' : 'were'} in the archive but not recreated in scratch (the restore's safety rule)`,
    );
  }
  const otherSkips = skipped.filter((line) => !LINK_OUTSIDE_TARGET.test(line));
  if (otherSkips.length > 0) notes.push(`not restored: ${otherSkips.slice(0, 10).join('; ')}${otherSkips.length > 10 ? `; and ${otherSkips.length - 10} more` : ''}`);
  if (missing.length > 0) notes.push(`missing from the restored tree: ${missing.join(', ')}`);
  if (other.length > 0) notes.push(`unexpected special files: ${other.slice(0, 10).join(', ')}`);
  const content = await checkEntries(restoreRoot, recorded, manifestFile, skipped, signal);

  if (differences.length > 0 || missing.length > 0 || other.length > 0 || !content.ok) {
    const what = [...differences, ...(content.ok ? [] : [content.detail])];
    return { ok: false, detail: [`the restored tree does not match the manifest recorded at backup: ${what.join('; ') || 'see below'}`, ...notes].join('; ') };
  }
  return {
    ok: true,
    detail: [
      `${plural(counts.entries, 'entry', 'entries')} as recorded: ${plural(counts.files, 'file')} (${formatBytes(counts.fileBytes)}), ${plural(counts.directories, 'directory', 'directories')}, ${plural(counts.symlinks, 'symbolic link')} under ${recorded.paths.join(', ')}`,
      content.detail,
      ...notes,
    ].join('; '),
  };
}

/** Mismatches named one by one in a check's detail; beyond this they are only counted. */
const MAX_LISTED_MISMATCHES = 5;

/**
 * Every entry of the per-file manifest against the restored tree, reading the manifest a line at a time and
 * each file in pieces: memory stays bounded whatever the number or size of the files.
 */
async function checkEntries(
  restoreRoot: string,
  recorded: FilesMetadata,
  manifestFile: string | undefined,
  skipped: readonly string[],
  signal: AbortSignal,
): Promise<{ ok: boolean; detail: string }> {
  if (recorded.manifest === undefined) return { ok: true, detail: 'no per-file manifest recorded (older backup); counts compared' };
  if (manifestFile === undefined) return { ok: false, detail: 'the per-file manifest recorded at backup was not kept by the restore' };
  let manifestSha256: string;
  try {
    manifestSha256 = await sha256Of(manifestFile);
  } catch (err) {
    if (isCode(err, 'ENOENT')) return { ok: false, detail: 'the per-file manifest recorded at backup is not in the archive' };
    return { ok: false, detail: `cannot read the per-file manifest kept by the restore: ${fsReason(err)}` };
  }
  if (manifestSha256 !== recorded.manifest.sha256) {
    return { ok: false, detail: `the per-file manifest in the archive does not match the SHA-256 recorded at backup (${recorded.manifest.sha256.slice(0, 12)}…, found ${manifestSha256.slice(0, 12)}…)` };
  }

  const linksLeftOut = skippedLinkPaths(skipped);
  const mismatches: string[] = [];
  let mismatched = 0;
  let checked = 0;
  let files = 0;
  let linksNotRestored = 0;
  const input = createReadStream(manifestFile);
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const text of lines) {
      if (signal.aborted) throw abortReason(signal);
      if (text === '') continue;
      checked++;
      const entry = parseManifestLine(text);
      if (!entry) return { ok: false, detail: `line ${checked} of the per-file manifest is not a valid entry` };
      const verdict = await compareEntry(restoreRoot, entry, linksLeftOut);
      if (verdict === 'link left out') linksNotRestored++;
      else if (verdict !== null) {
        mismatched++;
        if (mismatches.length < MAX_LISTED_MISMATCHES) mismatches.push(`${shown(entry.path)}: ${verdict}`);
      } else if (entry.type === 'file') files++;
    }
  } catch (err) {
    if (signal.aborted) throw abortReason(signal);
    return { ok: false, detail: `cannot read the per-file manifest kept by the restore: ${fsReason(err)}` };
  } finally {
    lines.close();
    input.destroy();
  }
  if (checked !== recorded.manifest.entries) {
    return { ok: false, detail: `the per-file manifest has ${checked} entries, ${recorded.manifest.entries} were recorded at backup` };
  }
  if (mismatched > 0) {
    const more = mismatched > mismatches.length ? `; and ${mismatched - mismatches.length} more` : '';
    return { ok: false, detail: `${mismatched} of ${plural(checked, 'entry', 'entries')} differ from the per-file manifest: ${mismatches.join('; ')}${more}` };
  }
  const leftOut = linksNotRestored > 0 ? ` (less ${plural(linksNotRestored, 'symbolic link')} leading out of the tree)` : '';
  return { ok: true, detail: `per-file manifest: ${plural(checked, 'entry', 'entries')} checked${leftOut}: types, sizes and link targets as recorded, the content of ${plural(files, 'file')} matching its SHA-256` };
}

/** A manifest line, or null when it is not one: paths must be absolute and normalized (nothing outside the restore root is read). */
function parseManifestLine(text: string): ManifestLine | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  const parsed = ManifestLine.safeParse(value);
  if (!parsed.success) return null;
  const line = parsed.data;
  const normalAbsolute = (p: string) => p.startsWith('/') && path.posix.normalize(p) === p && !p.includes('\0');
  if (!normalAbsolute(line.path)) return null;
  if (line.type === 'hardlink' && !normalAbsolute(line.target)) return null;
  return line;
}

type EntryVerdict = null | 'link left out' | string;

/** null when the restored entry is as recorded; otherwise what differs. */
async function compareEntry(restoreRoot: string, entry: ManifestLine, linksLeftOut: LinksLeftOut): Promise<EntryVerdict> {
  const restored = path.posix.join(restoreRoot, entry.path);
  let info;
  try {
    info = await lstat(restored);
  } catch (err) {
    if (!isCode(err, 'ENOENT') && !isCode(err, 'ENOTDIR')) return `cannot be read: ${fsReason(err)}`;
    if (entry.type === 'symlink' && linksLeftOut.includes(entry.path, entry.target, restoreRoot)) return 'link left out';
    return 'missing from the restored tree';
  }
  const actualType = info.isDirectory() ? 'directory' : info.isFile() ? 'file' : info.isSymbolicLink() ? 'symbolic link' : 'special file';
  switch (entry.type) {
    case 'directory':
      return info.isDirectory() ? null : `a ${actualType}, recorded as a directory`;
    case 'file': {
      if (!info.isFile()) return `a ${actualType}, recorded as a file`;
      if (info.size !== entry.size) return `${info.size} bytes, ${entry.size} recorded`;
      let sha256: string;
      try {
        sha256 = await sha256Of(restored);
      } catch (err) {
        return `cannot be read: ${fsReason(err)}`;
      }
      return sha256 === entry.sha256 ? null : `content differs: SHA-256 ${sha256.slice(0, 16)}…, ${entry.sha256.slice(0, 16)}… recorded`;
    }
    case 'symlink': {
      if (!info.isSymbolicLink()) return `a ${actualType}, recorded as a symbolic link`;
      const target = await readlink(restored);
      return target === restoredLinkTarget(entry, restoreRoot) ? null : `links to ${shown(target)}, ${shown(entry.target)} recorded`;
    }
    case 'hardlink': {
      if (!info.isFile()) return `a ${actualType}, recorded as a hard link to ${shown(entry.target)}`;
      const first = await lstat(path.posix.join(restoreRoot, entry.target)).catch(() => null);
      return first !== null && first.dev === info.dev && first.ino === info.ino ? null : `not a hard link to ${shown(entry.target)}, as recorded`;
    }
  }
}

/**
 * The link target the extraction writes: as recorded, except an absolute target inside the restore target,
 * which it makes relative to keep the link's meaning there (restore/extract.ts).
 */
function restoredLinkTarget(entry: Extract<ManifestLine, { type: 'symlink' }>, restoreRoot: string): string {
  if (!entry.target.startsWith('/') || !entry.target.startsWith(restoreRoot + '/')) return entry.target;
  return path.posix.relative(path.posix.dirname(path.posix.join(restoreRoot, entry.path)), entry.target) || '.';
}

interface LinksLeftOut {
  /** Whether the extraction deliberately left this symbolic link out because it leads out of the restore target. */
  includes(entryPath: string, target: string, restoreRoot: string): boolean;
}

/**
 * The symbolic links the extraction listed as leading out of the target, by path as backed up. The list stops
 * after a thousand skips ("… and N more"): past it, a link counts as left out when its target plainly leads out.
 */
function skippedLinkPaths(skipped: readonly string[]): LinksLeftOut {
  const listed = new Set<string>();
  for (const line of skipped) {
    if (!LINK_OUTSIDE_TARGET.test(line)) continue;
    const name = line.slice(0, line.indexOf(': symbolic link to '));
    let entryName = name;
    if (name.startsWith('"')) {
      try {
        entryName = JSON.parse(name) as string;
      } catch {
        continue;
      }
    }
    listed.add(path.posix.join('/', entryName));
  }
  const truncated = skipped.some((line) => /^… and \d+ more entries not restored$/.test(line));
  return {
    includes: (entryPath, target, restoreRoot) => listed.has(entryPath) || (truncated && leadsOut(entryPath, target, restoreRoot)),
  };
}

function leadsOut(entryPath: string, target: string, restoreRoot: string): boolean {
  if (target.startsWith('/')) return target !== restoreRoot && !target.startsWith(restoreRoot + '/');
  let depth = entryPath.split('/').filter(Boolean).length - 1;
  for (const part of target.split('/')) {
    if (part === '..') depth--;
    else if (part !== '' && part !== '.') depth++;
    if (depth < 0) return true;
  }
  return false;
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

// ── the plan's own checks ───────────────────────────────────────────────────────

/** Where a `sql` check runs: the drill's own scratch servers, over their sockets (nothing else can answer there). */
export type SqlTarget =
  | { kind: 'postgres'; socketDir: string; port: number; database: string }
  | { kind: 'mysql'; socket: string; port: number; database: string }
  | { kind: 'sqlite'; file: string };

export interface PlanCheckOptions {
  signal: AbortSignal;
  timeoutMs: number;
}

/** A check's answer passes when it is true, 1, "1", "t" or "true". */
export function isTrue(value: unknown): boolean {
  if (value === true || value === 1 || value === 1n) return true;
  if (typeof value === 'string') return ['1', 't', 'true'].includes(value.trim().toLowerCase());
  return false;
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'string') return JSON.stringify(clip(value, 200));
  if (typeof value === 'bigint') return value.toString();
  if (Buffer.isBuffer(value)) return `${value.length} bytes`;
  return clip(JSON.stringify(value) ?? String(value), 200);
}

/** The verdict on a query's rows: exactly one row whose first column is true. */
function judgeRows(rows: readonly unknown[][], where: string): { ok: boolean; detail: string } {
  if (rows.length !== 1) {
    return { ok: false, detail: `returned ${rows.length} rows in ${where}; a check must return exactly one row whose first column is true` };
  }
  const first = rows[0]![0];
  return isTrue(first)
    ? { ok: true, detail: `returned ${describeValue(first)} in ${where}` }
    : { ok: false, detail: `returned ${describeValue(first)} in ${where}, not true` };
}

export async function runSqlCheck(sql: string, target: SqlTarget, options: PlanCheckOptions): Promise<{ ok: boolean; detail: string }> {
  try {
    switch (target.kind) {
      case 'postgres':
        return await postgresCheck(sql, target, options);
      case 'mysql':
        return await mysqlCheck(sql, target, options);
      case 'sqlite':
        return await sqliteCheck(sql, target, options);
    }
  } catch (err) {
    if (options.signal.aborted) throw abortReason(options.signal);
    return { ok: false, detail: err instanceof LifeboatError ? err.message : `the check failed: ${err instanceof Error ? err.message : String(err)}` };
  }
}

async function postgresCheck(sql: string, target: Extract<SqlTarget, { kind: 'postgres' }>, options: PlanCheckOptions): Promise<{ ok: boolean; detail: string }> {
  const where = `the restored PostgreSQL database ${target.database}`;
  const client = await connectPostgres({ host: target.socketDir, port: target.port, user: 'postgres', database: target.database }, undefined, 'restore_failed');
  const stop = () => void client.end().catch(() => {});
  options.signal.addEventListener('abort', stop, { once: true });
  try {
    await client.query("SELECT pg_catalog.set_config('statement_timeout', $1, false)", [String(options.timeoutMs)]);
    let answer: unknown;
    try {
      answer = await client.query({ text: sql, rowMode: 'array' });
    } catch (err) {
      if (options.signal.aborted) throw abortReason(options.signal);
      return { ok: false, detail: `failed in ${where}: ${pgReason(err)}` };
    }
    // Several statements give one result each: the last one is the answer.
    const last = (Array.isArray(answer) ? answer.at(-1) : answer) as { rows?: unknown } | undefined;
    const rows = Array.isArray(last?.rows) ? (last.rows as unknown[][]) : [];
    return judgeRows(rows, where);
  } finally {
    options.signal.removeEventListener('abort', stop);
    await client.end().catch(() => {});
  }
}

async function mysqlCheck(sql: string, target: Extract<SqlTarget, { kind: 'mysql' }>, options: PlanCheckOptions): Promise<{ ok: boolean; detail: string }> {
  const where = `the restored MariaDB database ${target.database}`;
  const connection = await connectMysql({ host: target.socket, port: target.port, user: 'root', database: target.database }, 'restore_failed');
  const stop = () => connection.destroy();
  options.signal.addEventListener('abort', stop, { once: true });
  try {
    let rows: unknown;
    try {
      [rows] = await connection.query<RowDataPacket[]>({ sql, rowsAsArray: true, timeout: options.timeoutMs });
    } catch (err) {
      if (options.signal.aborted) throw abortReason(options.signal);
      return { ok: false, detail: `failed in ${where}: ${mysqlErrorReason(err)}` };
    }
    if (!Array.isArray(rows)) return { ok: false, detail: `returned no rows in ${where} (not a query); a check must return exactly one row whose first column is true` };
    return judgeRows(rows as unknown[][], where);
  } finally {
    options.signal.removeEventListener('abort', stop);
    await connection.end().catch(() => {});
  }
}

/** Unit separator between columns: a value is unlikely to hold it. */
const SQLITE_COLUMN_SEPARATOR = '\x1f';

async function sqliteCheck(sql: string, target: Extract<SqlTarget, { kind: 'sqlite' }>, options: PlanCheckOptions): Promise<{ ok: boolean; detail: string }> {
  const where = `the restored SQLite database ${path.posix.basename(target.file)}`;
  try {
    // The SQL goes in on stdin: as an argument, text starting with "-" would be read as an option.
    const result = await runChild({
      tool: 'sqlite3',
      program: 'sqlite3',
      args: ['-readonly', '-bail', '-batch', '-safe', '-init', '/dev/null', '-list', '-noheader', '-separator', SQLITE_COLUMN_SEPARATOR, target.file],
      input: Readable.from([Buffer.from(`${sql}\n`)]),
      timeoutMs: options.timeoutMs,
      signal: options.signal,
      failureCode: 'restore_failed',
    });
    const lines = result.stdout.split('\n').filter((line) => line !== '');
    return judgeRows(
      lines.map((line) => [line.split(SQLITE_COLUMN_SEPARATOR)[0]]),
      where,
    );
  } catch (err) {
    if (options.signal.aborted) throw abortReason(options.signal);
    return { ok: false, detail: `failed in ${where}: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/**
 * Runs a plan's `command` check: argv without a shell, in the restored tree, with a sanitized environment
 * (never the agent's secrets) plus where the scratch databases are. Exit 0 passes.
 */
export async function runCommandCheck(argv: readonly string[], cwd: string, env: Readonly<Record<string, string>>, options: PlanCheckOptions): Promise<{ ok: boolean; detail: string }> {
  const program = argv[0]!;
  const tool = `check command "${path.posix.basename(program)}"`;
  try {
    const result = await runChild({
      tool,
      program,
      args: argv.slice(1),
      cwd,
      env: childEnv({ set: env }),
      timeoutMs: options.timeoutMs,
      signal: options.signal,
      failureCode: 'restore_failed',
      maxOutputBytes: 1024 * 1024,
    });
    const said = redact(result.stdout.trim());
    return { ok: true, detail: `exited 0 in ${cwd}${said ? `; it printed: ${said.length > 1000 ? `…${said.slice(-1000)}` : said}` : ''}` };
  } catch (err) {
    if (options.signal.aborted) throw abortReason(options.signal);
    return { ok: false, detail: `${err instanceof Error ? err.message : String(err)} (run in ${cwd})` };
  }
}

import { existsSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { LifeboatError, listIssues, Step, stepKind, type Recipe } from '@lifeboat/shared';
import type { JobContext } from '../sources/source.js';
import type { SecretStore } from './secrets.js';

/** What a recipe may use while it reads an application's configuration. */
export interface RecipeEnv {
  ctx: JobContext;
  /** Where passwords found in an application's config are kept for the steps' `passwordFile`. */
  secrets: SecretStore;
  /**
   * Ask live services while expanding (CiviCRM's directory settings in its database, Elasticsearch's snapshot
   * repositories). Off for `discover`, which only reads files.
   */
  online: boolean;
  /** HTTP client for search-engine REST APIs (injectable for tests). */
  fetch: typeof fetch;
  /** Reads CiviCRM's directory settings from its database (injectable for tests). */
  civicrmDirectorySettings: CivicrmDirectorySettingsReader;
  /** The clock, for names such as a search snapshot's. */
  now: () => Date;
  /** Whether a host name resolves on this machine (injectable for tests). */
  resolves: (host: string) => Promise<boolean>;
  /** This machine's MySQL/MariaDB socket, where PHP's "localhost" connects (injectable for tests). */
  localMysqlSocket: () => string | undefined;
}

/** The usual MySQL/MariaDB socket paths (Debian/Ubuntu, RHEL, macOS-style builds). */
export const MYSQL_SOCKETS = ['/run/mysqld/mysqld.sock', '/var/run/mysqld/mysqld.sock', '/var/lib/mysql/mysql.sock', '/tmp/mysql.sock'];

export function findLocalMysqlSocket(): string | undefined {
  return MYSQL_SOCKETS.find((p) => existsSync(p));
}

export interface MysqlConnection {
  host: string;
  port: number;
  user: string;
  password?: string;
  database: string;
}

/** Directory settings (name → value) stored in CiviCRM's `civicrm_setting` table for one domain. */
export type CivicrmDirectorySettingsReader = (db: MysqlConnection, names: readonly string[], domainId: number) => Promise<Map<string, string>>;

/** A problem in an application's own configuration: names the file, and the line when there is one. */
export function configError(file: string, line: number | undefined, message: string, details?: string[]): LifeboatError {
  return new LifeboatError('bad_request', `${file}${line !== undefined ? `:${line}` : ''}: ${message}`, details);
}

/** Reads an application's config file, failing with the file's name and what to do. */
export async function readConfigFile(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new LifeboatError('path_not_found', `${what} not found: ${file}`);
    if (code === 'EACCES' || code === 'EPERM') throw new LifeboatError('forbidden', `cannot read ${what} ${file}: permission denied (the agent must be able to read it)`);
    if (code === 'EISDIR') throw new LifeboatError('bad_request', `${what} ${file} is a directory, not a file`);
    throw new LifeboatError('bad_request', `cannot read ${what} ${file}: ${code ?? 'error'}`);
  }
}

export type PathKind = 'dir' | 'file' | 'other';

/** What is at a path (following symlinks), or null when nothing readable is. */
export async function pathKind(p: string): Promise<PathKind | null> {
  try {
    const info = await stat(p);
    return info.isDirectory() ? 'dir' : info.isFile() ? 'file' : 'other';
  } catch {
    return null;
  }
}

export function isInside(child: string, parent: string): boolean {
  const rel = path.posix.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.posix.isAbsolute(rel));
}

/** The paths in order, without duplicates and without those inside another listed path. */
export function outermost(paths: readonly string[]): string[] {
  const resolved = [...new Set(paths.map((p) => path.posix.resolve(p)))];
  return resolved.filter((p) => !resolved.some((other) => other !== p && isInside(p, other)));
}

/**
 * The `passwordFile` for a database step: the plan's own passwordFile when it names one; otherwise the password
 * found in the application's config, kept by the secret store; otherwise none (the database needs no password,
 * or the source's own defaults apply). A stale stored copy is removed whenever it is no longer the one used.
 */
export async function passwordOption(env: RecipeEnv, recipe: Recipe, key: string, found: string | undefined): Promise<{ passwordFile?: string }> {
  if (recipe.passwordFile) {
    await env.secrets.remove(key);
    return { passwordFile: recipe.passwordFile };
  }
  if (found) return { passwordFile: await env.secrets.put(key, found) };
  await env.secrets.remove(key);
  return {};
}

/**
 * Validates the steps with the plan schema and checks the order every recipe promises: dumps first, then files.
 * A value from the application's config that a step refuses (a database name starting with "-") fails here.
 */
export function finishSteps(recipe: Recipe['name'], source: string, steps: readonly unknown[]): Step[] {
  const out: Step[] = [];
  for (const [i, raw] of steps.entries()) {
    const parsed = Step.safeParse(raw);
    if (!parsed.success) {
      throw new LifeboatError('bad_request', `the ${recipe} recipe could not use what ${source} says (step ${i + 1})`, listIssues(parsed.error));
    }
    out.push(parsed.data);
  }
  const firstFiles = out.findIndex((s) => stepKind(s) === 'files');
  if (firstFiles >= 0 && out.slice(firstFiles).some((s) => stepKind(s) !== 'files')) {
    throw new LifeboatError('internal', `the ${recipe} recipe put a dump after the files; dumps must come first`);
  }
  if (out.length === 0) throw new LifeboatError('bad_request', `the ${recipe} recipe found nothing to back up in ${source}`);
  return out;
}

/** A files step for the paths that exist, with the plan's extra paths and excludes (and the recipe's own). */
export function filesStep(paths: readonly string[], recipe: Recipe, exclude: readonly string[] = []): Step | null {
  const all = outermost([...paths, ...(recipe.paths ?? [])]);
  if (all.length === 0) return null;
  return { files: { paths: all, exclude: [...new Set([...exclude, ...(recipe.exclude ?? [])])] } };
}

/**
 * A database host the application names but this machine cannot resolve (a Docker service name, say) is
 * worth a warning before the dump fails on it. Sockets, IPs and localhost are left alone.
 */
export async function warnIfUnresolvable(env: RecipeEnv, host: string, what: string): Promise<void> {
  if (!env.online || host.startsWith('/') || isIP(host) || host === 'localhost') return;
  const key = `${what}\0${host}`;
  if (warnedHosts.has(env) && warnedHosts.get(env)!.has(key)) return;
  if (await env.resolves(host)) return;
  if (!warnedHosts.has(env)) warnedHosts.set(env, new Set());
  warnedHosts.get(env)!.add(key);
  env.ctx.warn(`${what} names the database host "${host}", which does not resolve on this machine (a container's service name?); the dump will likely fail. Publish the database on this machine, or give the host an address here.`);
}

/** Once per host and config in one expansion. */
const warnedHosts = new WeakMap<RecipeEnv, Set<string>>();

/** The default for RecipeEnv.resolves: a DNS/hosts lookup with a short deadline. */
export async function hostResolves(host: string): Promise<boolean> {
  try {
    await Promise.race([lookup(host), new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 3000).unref())]);
    return true;
  } catch {
    return false;
  }
}

/** A note about something normal that was left out (no custom templates configured): the job log, not a warning. */
export function note(env: RecipeEnv, message: string): void {
  env.ctx.log.info(message);
}

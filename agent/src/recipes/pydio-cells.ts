import { constants } from 'node:fs';
import { chmod, chown, lstat, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { LifeboatError, type Recipe, type Step } from '@lifeboat/shared';
import type { JobContext } from '../sources/source.js';
import { configError, filesStep, finishSteps, isInside, note, outermost, passwordOption, pathKind, readConfigFile, warnIfUnresolvable, type RecipeEnv } from './common.js';
import { parseGoMysqlDsn, type GoMysqlDsn } from './parse/go-mysql-dsn.js';
import { formatJsonPath, JsonSyntaxError, locateJsonStrings, type JsonPath, type JsonStringValue } from './parse/json-locate.js';
import { secretKey } from './secrets.js';

/**
 * Pydio Cells (after its guide "Create a backup of your Cells installation and recover from it"): the MySQL
 * database first, then the Cells working directory as a whole (pydio.json and everything beside it), then each
 * local datasource's PARENT folder, which holds the datasources and the `.minio.sys` folder a datasource cannot
 * work without. On restore to a host with another address, `--rewrite-host OLD=NEW` rewrites the host values in
 * the restored pydio.json (binds, external URLs, datasource peers and hosts), as the guide asks.
 */

export const CONFIG_FILE = 'pydio.json';
/** Where Cells keeps its working directory when CELLS_WORKING_DIR is not set (Linux), and the usual service location. */
export const DEFAULT_WORKING_DIRS = ['~/.config/pydio/cells', '/var/cells'];

interface CellsDatabase {
  id: string;
  dsn: GoMysqlDsn;
  line: number;
}

export interface CellsInstall {
  workingDir: string;
  configFile: string;
  databases: CellsDatabase[];
  /** Parents of local datasources (each holds .minio.sys), existing ones. */
  datasourceParents: string[];
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
const isObject = (v: Json | undefined): v is { [key: string]: Json } => typeof v === 'object' && v !== null && !Array.isArray(v);

export async function readCellsInstall(given: string, env: RecipeEnv): Promise<CellsInstall> {
  const kind = await pathKind(given);
  if (kind === null) throw new LifeboatError('path_not_found', `Pydio Cells: nothing at ${given}; give the Cells working directory (the one holding pydio.json)`);
  const workingDir = kind === 'file' ? path.dirname(given) : given;
  const configFile = kind === 'file' ? given : path.join(workingDir, CONFIG_FILE);
  const text = await readConfigFile(configFile, "Pydio Cells' configuration");
  let strings: JsonStringValue[];
  try {
    strings = locateJsonStrings(text);
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw configError(configFile, err.line, `not valid JSON: ${err.message}`);
    throw err;
  }
  const config = JSON.parse(text) as Json;
  if (!isObject(config)) throw configError(configFile, 1, 'expected a JSON object');
  const lineOf = (jsonPath: JsonPath) => {
    const s = strings.find((v) => v.path.length === jsonPath.length && v.path.every((p, i) => p === jsonPath[i]));
    return s ? lineAtOffset(text, s.start) : undefined;
  };

  // Databases: defaults.database names the main one ("<id>" or {"$ref": "#/databases/<id>"}).
  const dbs = isObject(config.databases) ? config.databases : {};
  const defaultRef = isObject(config.defaults) ? config.defaults.database : undefined;
  const defaultId = typeof defaultRef === 'string' ? defaultRef : isObject(defaultRef) && typeof defaultRef.$ref === 'string' ? defaultRef.$ref.replace(/^#?\/?databases\//, '') : undefined;
  const ids = Object.keys(dbs).sort((a, b) => (a === defaultId ? -1 : b === defaultId ? 1 : 0));
  const databases: CellsDatabase[] = [];
  for (const id of ids) {
    const entry = dbs[id];
    if (!isObject(entry)) continue;
    const driver = typeof entry.driver === 'string' ? entry.driver : '';
    const dsnText = typeof entry.dsn === 'string' ? entry.dsn : '';
    const line = lineOf(['databases', id, 'dsn']);
    if (driver === 'mysql') {
      const parsed = parseGoMysqlDsn(dsnText);
      if (!parsed.ok) {
        const hint = /^[0-9a-f-]{36}$/i.test(dsnText) ? " (it looks like a key of Cells' vault, which this recipe cannot read; use the vm recipe with a mysql database)" : '';
        if (id === defaultId || databases.length === 0) throw configError(configFile, line, `cannot read the MySQL DSN of database "${id}": ${parsed.problem}${hint}`);
        env.ctx.warn(`Pydio Cells: ${configFile}:${line ?? '?'}: cannot read the MySQL DSN of database "${id}" (${parsed.problem}); it is not backed up`);
        continue;
      }
      const same = databases.some((d) => d.dsn.host === parsed.value.host && d.dsn.port === parsed.value.port && d.dsn.socket === parsed.value.socket && d.dsn.database === parsed.value.database);
      if (!same) databases.push({ id, dsn: parsed.value, line: line ?? 0 });
    } else if (driver === 'mongodb') {
      env.ctx.warn(`Pydio Cells: database "${id}" is MongoDB, which this recipe does not dump; add a command step (mongodump --archive) to back it up`);
    } else if (driver) {
      // boltdb/bleve/sqlite live in files; those under the working directory are in its archive.
      const file = dsnText.replace(/^[a-z]+:\/\//, '').replace(/\?.*$/, '');
      if (file.startsWith('/') && !isInside(file, workingDir)) env.ctx.warn(`Pydio Cells: the ${driver} database "${id}" is at ${file}, outside the working directory; add it to the plan's paths`);
    }
  }
  if (databases.length === 0) {
    throw configError(configFile, lineOf(['defaults', 'database', '$ref']) ?? undefined, 'no MySQL database found (databases / defaults.database); is this the working directory of a configured Cells?');
  }

  // Local datasources: objects services keep the parent folder (LocalFolder); sync services the datasource folder.
  const parents: string[] = [];
  const services = isObject(config.services) ? config.services : {};
  for (const [name, service] of Object.entries(services)) {
    if (!isObject(service)) continue;
    const objects = /^pydio\.grpc\.data\.objects\.(.+)$/.exec(name);
    const sync = /^pydio\.grpc\.data\.sync\.(.+)$/.exec(name);
    if (!objects && !sync) continue;
    const remote = isRemoteStorage(service);
    if (objects) {
      if (remote) env.ctx.warn(`Pydio Cells: the object storage "${objects[1]}" is a remote S3/gateway service; its data is not on this machine and is backed up by its provider`);
      else if (typeof service.LocalFolder === 'string' && service.LocalFolder) parents.push(service.LocalFolder);
    }
    if (sync && !remote) {
      const storage = service.StorageConfiguration;
      const folder = isObject(storage) && typeof storage.folder === 'string' ? storage.folder : undefined;
      if (folder) parents.push(path.posix.dirname(folder.replace(/\/+$/, '')));
    }
  }
  const datasourceParents: string[] = [];
  for (const parent of outermost(parents)) {
    if (isInside(parent, workingDir)) {
      datasourceParents.push(parent);
      continue;
    }
    const kindOf = await pathKind(parent);
    if (kindOf !== 'dir') {
      env.ctx.warn(`Pydio Cells: the datasource folder ${parent} named in ${configFile} does not exist on this machine (on another peer?); not backed up`);
      continue;
    }
    if ((await pathKind(path.join(parent, '.minio.sys'))) !== 'dir') note(env, `Pydio Cells: ${parent} holds no .minio.sys (yet); backed up all the same`);
    datasourceParents.push(parent);
  }
  return { workingDir, configFile, databases, datasourceParents };
}

function isRemoteStorage(service: { [key: string]: Json }): boolean {
  const type = service.StorageType;
  if (type === undefined || type === 0 || type === 'LOCAL') return typeof service.EndpointUrl === 'string' && service.EndpointUrl !== '';
  return true;
}

export async function expandPydioCells(recipe: Recipe, env: RecipeEnv): Promise<Step[]> {
  const install = await readCellsInstall(recipe.path!, env);
  const steps: unknown[] = [];
  for (const [index, db] of install.databases.entries()) {
    const host = db.dsn.socket ?? db.dsn.host;
    await warnIfUnresolvable(env, host, `Pydio Cells' ${install.configFile}`);
    const password = await passwordOption(env, recipe, secretKey('pydio-cells', install.workingDir, index === 0 ? 'db' : `db-${db.id}`), db.dsn.password);
    steps.push({
      mysql: { databases: [db.dsn.database], host, port: db.dsn.port, ...(db.dsn.user ? { user: db.dsn.user } : {}), ...password },
    });
  }
  const files = filesStep([install.workingDir, ...install.datasourceParents], recipe);
  if (files) steps.push(files);
  return finishSteps('pydio-cells', install.configFile, steps);
}

function lineAtOffset(text: string, offset: number): number {
  let line = 1;
  for (let k = 0; k < offset; k++) if (text[k] === '\n') line++;
  return line;
}

// ── after restore: rewrite hosts in the restored pydio.json ───────────────────────────────────────────────────

/** Keys whose string values name this machine: binds, external URLs, peers and object-service hosts. */
const HOST_KEY = /host|bind|url|peer|address|external|endpoint|fronts/i;

/** Replaces `from` where it stands as a whole host name or address inside `text` (case-insensitive). */
export function replaceHost(text: string, from: string, to: string): { text: string; count: number } {
  const escaped = from.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // Not part of a longer name: no name character before, and after it no name character (a "." only ends it
  // when no label follows, so "10.0.0.1" does not match "10.0.0.10" and "cells" not "cells.example.org").
  const pattern = new RegExp(`(?<![A-Za-z0-9.-])${escaped}(?![A-Za-z0-9-])(?!\\.[A-Za-z0-9])`, 'gi');
  let count = 0;
  const out = text.replace(pattern, () => {
    count++;
    return to;
  });
  return { text: out, count };
}

/** In a DSN only the address inside tcp(…) is a host: user names and database names are left alone. */
function replaceDsnHost(dsn: string, from: string, to: string): { text: string; count: number } {
  let count = 0;
  const text = dsn.replace(/\b(tcp[46]?\()([^)]*)(\))/g, (_, open: string, address: string, close: string) => {
    const r = replaceHost(address, from, to);
    count += r.count;
    return open + r.text + close;
  });
  return { text, count };
}

export interface HostRewrite {
  from: string;
  to: string;
}

/** Rewrites hosts in one pydio.json text; returns the new text and, per rewrite, the JSON paths it changed. */
export function rewriteCellsConfig(text: string, rewrites: readonly HostRewrite[]): { text: string; changed: Map<string, string[]> } {
  const strings = locateJsonStrings(text);
  const changed = new Map<string, string[]>(rewrites.map((r) => [`${r.from}=${r.to}`, []]));
  const edits: { start: number; end: number; value: string }[] = [];
  for (const s of strings) {
    const keys = s.path.filter((p): p is string => typeof p === 'string');
    const key = keys.at(-1) ?? '';
    const isDsn = key.toLowerCase() === 'dsn';
    if (!isDsn && !HOST_KEY.test(key)) continue;
    let value = s.value;
    for (const r of rewrites) {
      const result = isDsn ? replaceDsnHost(value, r.from, r.to) : replaceHost(value, r.from, r.to);
      if (result.count > 0) {
        value = result.text;
        changed.get(`${r.from}=${r.to}`)!.push(formatJsonPath(s.path));
      }
    }
    if (value !== s.value) edits.push({ start: s.start, end: s.end, value });
  }
  let out = text;
  for (const edit of edits.sort((a, b) => b.start - a.start)) out = out.slice(0, edit.start) + JSON.stringify(edit.value) + out.slice(edit.end);
  return { text: out, changed };
}

/** pydio.json files under a restored tree; datasource folders (with .minio.sys) are not searched. */
export async function findCellsConfigs(root: string, limits = { maxDepth: 12, maxDirs: 50_000 }): Promise<string[]> {
  const found: string[] = [];
  let queue: { dir: string; depth: number }[] = [{ dir: root, depth: 0 }];
  let visited = 0;
  while (queue.length && visited < limits.maxDirs) {
    const next: typeof queue = [];
    for (const { dir, depth } of queue) {
      if (++visited > limits.maxDirs) break;
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      if (entries.some((e) => e.isDirectory() && e.name === '.minio.sys')) continue;
      const config = entries.find((e) => e.isFile() && e.name === CONFIG_FILE);
      if (config) {
        // A Cells working directory: its subfolders are Cells' own data, not other installations.
        found.push(path.join(dir, CONFIG_FILE));
        continue;
      }
      if (depth >= limits.maxDepth) continue;
      for (const e of entries) if (e.isDirectory()) next.push({ dir: path.join(dir, e.name), depth: depth + 1 });
    }
    queue = next;
  }
  return found.sort();
}

/** After a restore into `dir`: rewrites OLD→NEW hosts in every restored pydio.json; lines for the job summary. */
export async function afterPydioRestore(dir: string, rewrites: readonly HostRewrite[], ctx: JobContext): Promise<string[]> {
  const configs = await findCellsConfigs(dir);
  if (configs.length === 0) {
    return rewrites.length ? [`pydio-cells: no ${CONFIG_FILE} under ${dir}; no host rewritten (${rewrites.map((r) => `${r.from}=${r.to}`).join(', ')} not applied)`] : [];
  }
  if (rewrites.length === 0) {
    return configs.map((c) => `pydio-cells: ${c} restored as it was; on a host with another address, restore again with --rewrite-host OLD=NEW (binds, external URL, datasource peers)`);
  }
  const lines: string[] = [];
  for (const file of configs) {
    const text = await readFile(file, 'utf8');
    let result: ReturnType<typeof rewriteCellsConfig>;
    try {
      result = rewriteCellsConfig(text, rewrites);
    } catch (err) {
      if (err instanceof JsonSyntaxError) {
        ctx.warn(`pydio-cells: ${file}:${err.line}: not valid JSON (${err.message}); hosts not rewritten`);
        lines.push(`pydio-cells: ${file}: not valid JSON at line ${err.line}; hosts not rewritten`);
        continue;
      }
      throw err;
    }
    for (const r of rewrites) {
      const paths = result.changed.get(`${r.from}=${r.to}`) ?? [];
      if (paths.length === 0) {
        const message = `pydio-cells: ${file}: ${r.from} → ${r.to} matched nothing (no host value is ${r.from}); check the old address`;
        ctx.warn(message);
        lines.push(message);
      } else {
        lines.push(`pydio-cells: ${file}: ${r.from} → ${r.to} in ${paths.length} value(s): ${paths.slice(0, 12).join(', ')}${paths.length > 12 ? ', …' : ''}`);
      }
    }
    if (result.text !== text) await replaceFileKeepingMode(file, result.text);
  }
  return lines;
}

/** Writes next to the file and renames over it, keeping its mode and owner (it holds secrets: 0600). */
async function replaceFileKeepingMode(file: string, text: string): Promise<void> {
  const info = await lstat(file);
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.lifeboat-${randomBytes(4).toString('hex')}`);
  const handle = await open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
    await handle.close();
    await chmod(temp, info.mode & 0o7777);
    if (process.getuid?.() === 0) await chown(temp, info.uid, info.gid);
    await rename(temp, file);
  } catch (err) {
    await handle.close().catch(() => {});
    await rm(temp, { force: true });
    throw err;
  }
}

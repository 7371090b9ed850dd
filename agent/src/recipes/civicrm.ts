import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { LifeboatError, type MysqlStepOptions, type Recipe, type Step } from '@lifeboat/shared';
import {
  configError,
  filesStep,
  finishSteps,
  note,
  passwordOption,
  pathKind,
  readConfigFile,
  warnIfUnresolvable,
  type CivicrmDirectorySettingsReader,
  type MysqlConnection,
  type RecipeEnv,
} from './common.js';
import { parseDatabaseUrl, type DatabaseUrl } from './parse/db-url.js';
import { parsePhpSettings, PhpSyntaxError, type PhpSettings, type PhpValue } from './parse/php-define.js';
import { secretKey } from './secrets.js';

/**
 * CiviCRM (after its sysadmin guide, "Backup Data"): the MySQL database named by CIVICRM_DSN in
 * civicrm.settings.php — and the CMS's own database (CIVICRM_UF_DSN) and a separate logging database when they
 * are other databases, since a site is not restored without them — then the directories of Administer »
 * System Settings » Directories: the custom files directory, the images directory, the custom templates
 * directory (plus the extensions and custom PHP directories when present), and the settings file itself.
 */

export const SETTINGS_FILE = 'civicrm.settings.php';

/** Where civicrm.settings.php lives under a site root, per CMS, most common first. */
export const SETTINGS_LOCATIONS = [
  'sites/default/civicrm.settings.php', // Drupal 7 / Backdrop multisite layout
  'web/sites/default/civicrm.settings.php', // Drupal 8+ (composer, web/ docroot)
  'docroot/sites/default/civicrm.settings.php',
  'wp-content/uploads/civicrm/civicrm.settings.php', // WordPress (current)
  'wp-content/plugins/civicrm/civicrm.settings.php', // WordPress (older sites)
  'administrator/components/com_civicrm/civicrm.settings.php', // Joomla (back-end copy)
  'private/civicrm.settings.php', // CiviCRM Standalone
  'data/civicrm.settings.php', // CiviCRM Standalone (early releases)
  'civicrm.settings.php', // Backdrop (sibling of its settings.php)
];

/** The directory settings that hold data to keep, with CiviCRM's defaults (settings/Directory.boot.setting.php). */
const DIRECTORY_SETTINGS = [
  { name: 'customFileUploadDir', label: 'custom files directory', default: '[civicrm.files]/custom/' },
  // The images directory's default sits inside persist/; persist/ as a whole is what CiviCRM keeps there.
  { name: 'imageUploadDir', label: 'images directory', default: '[civicrm.files]/persist/contribute/', defaultBackup: '[civicrm.files]/persist/' },
  { name: 'customTemplateDir', label: 'custom templates directory', default: null },
  { name: 'customPHPPathDir', label: 'custom PHP directory', default: null },
  { name: 'extensionsDir', label: 'extensions directory', default: '[civicrm.files]/ext/' },
] as const;

export interface CivicrmSite {
  settingsFile: string;
  /** The databases to dump, CiviCRM's own first. */
  databases: { purpose: string; url: DatabaseUrl; line: number }[];
  /** Directories to archive (existing ones), settings file last. */
  paths: string[];
}

/** Finds civicrm.settings.php from what the plan names: the file itself or the site root that contains it. */
export async function findCivicrmSettings(given: string): Promise<string> {
  const kind = await pathKind(given);
  if (kind === null) throw new LifeboatError('path_not_found', `CiviCRM: nothing at ${given}; give the site root or its civicrm.settings.php`);
  if (kind === 'file') return given;
  const found: string[] = [];
  for (const rel of SETTINGS_LOCATIONS) {
    const candidate = path.join(given, rel);
    if ((await pathKind(candidate)) === 'file') {
      found.push(candidate);
      break;
    }
  }
  // Drupal multisite: sites/<site>/civicrm.settings.php for other sites than "default".
  for (const sitesDir of ['sites', 'web/sites', 'docroot/sites']) {
    const entries = await readdir(path.join(given, sitesDir), { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      if (!entry.isDirectory() || entry.name === 'default' || entry.name === 'all') continue;
      const candidate = path.join(given, sitesDir, entry.name, SETTINGS_FILE);
      if ((await pathKind(candidate)) === 'file') found.push(candidate);
    }
  }
  if (found.length === 1) return found[0]!;
  if (found.length > 1) {
    throw new LifeboatError('bad_request', `CiviCRM: several sites under ${given}; give the settings file of the one this plan backs up as the recipe's path`, found);
  }
  throw new LifeboatError(
    'path_not_found',
    `CiviCRM: no civicrm.settings.php under ${given}; looked in ${SETTINGS_LOCATIONS.join(', ')} and sites/*/; give the settings file as the recipe's path`,
  );
}

export async function expandCivicrm(recipe: Recipe, env: RecipeEnv): Promise<Step[]> {
  const site = await readCivicrmSite(recipe.path!, env);
  const steps: unknown[] = [];
  for (const db of site.databases) {
    const options = mysqlOptions(db.url, env);
    await warnIfUnresolvable(env, options.host ?? 'localhost', `CiviCRM's ${site.settingsFile}`);
    const password = await passwordOption(env, recipe, secretKey('civicrm', site.settingsFile, db.purpose), db.url.password);
    steps.push({ mysql: { ...options, ...password } });
  }
  const files = filesStep(site.paths, recipe);
  if (files) steps.push(files);
  return finishSteps('civicrm', site.settingsFile, steps);
}

function mysqlOptions(url: DatabaseUrl, env: RecipeEnv): Partial<MysqlStepOptions> & { databases: string[] } {
  const options: Partial<MysqlStepOptions> & { databases: string[] } = { databases: [url.database!] };
  // A socket is given as the host (an absolute path). PHP's mysqli takes "localhost" to mean the local socket
  // (not TCP): the dump connects the same way CiviCRM does, through that socket when this machine has one.
  const host = url.socket ?? url.host ?? 'localhost';
  options.host = host === 'localhost' ? (env.localMysqlSocket() ?? host) : host;
  if (url.port !== undefined && !options.host.startsWith('/')) options.port = url.port;
  if (url.user) options.user = url.user;
  return options;
}

/** Reads the site: databases from the DSNs, directories from the settings (file, then database), existing ones only. */
export async function readCivicrmSite(given: string, env: RecipeEnv): Promise<CivicrmSite> {
  const settingsFile = await findCivicrmSettings(given);
  const text = await readConfigFile(settingsFile, 'CiviCRM settings file');
  let settings: PhpSettings;
  try {
    settings = parsePhpSettings(text);
  } catch (err) {
    if (err instanceof PhpSyntaxError) throw configError(settingsFile, err.line, `cannot read the PHP: ${err.message}`);
    throw err;
  }

  const main = requiredDsn(settings, settingsFile);
  const databases: CivicrmSite['databases'] = [{ purpose: 'db', url: main.url, line: main.line }];
  for (const [name, purpose] of [
    ['CIVICRM_UF_DSN', 'cms-db'],
    ['CIVICRM_LOGGING_DSN', 'logging-db'],
  ] as const) {
    const extra = optionalDsn(settings, name, settingsFile, env);
    if (extra && !databases.some((d) => sameDatabase(d.url, extra.url))) databases.push({ purpose, url: extra.url, line: extra.line });
  }

  const layout = siteLayout(settingsFile, settings);
  const fromFile = directorySettingsFromFile(settings);
  const missing = DIRECTORY_SETTINGS.map((d) => d.name).filter((name) => !fromFile.has(name));
  const fromDb = env.online && missing.length ? await directorySettingsFromDb(env, main.url, settings, missing, settingsFile) : new Map<string, string>();

  const paths: string[] = [];
  for (const setting of DIRECTORY_SETTINGS) {
    const explicit = fromFile.get(setting.name) ?? fromDb.get(setting.name);
    const value = explicit ?? ('defaultBackup' in setting ? setting.defaultBackup : setting.default);
    if (!value) {
      note(env, `CiviCRM: no ${setting.label} is configured; nothing to back up for it`);
      continue;
    }
    const resolved = resolveCivicrmPath(value, layout);
    if (!resolved.ok) {
      env.ctx.warn(`CiviCRM: the ${setting.label} "${value}" cannot be resolved (${resolved.problem}); it is not backed up`);
      continue;
    }
    const kind = await pathKind(resolved.path);
    if (kind === 'dir') paths.push(resolved.path);
    else if (explicit) env.ctx.warn(`CiviCRM: the ${setting.label} ${resolved.path} (configured as "${value}") does not exist; skipped`);
    else note(env, `CiviCRM: the ${setting.label} ${resolved.path} does not exist yet; skipped`);
  }
  paths.push(settingsFile);
  note(env, 'CiviCRM: changes to the CiviCRM code itself are not part of this backup; keep them in version control');
  return { settingsFile, databases, paths };
}

function requiredDsn(settings: PhpSettings, file: string): { url: DatabaseUrl; line: number } {
  const all = settings.defines.get('CIVICRM_DSN') ?? [];
  const literal = all.find((d) => d.value !== null);
  if (!literal) {
    if (all.length) {
      throw configError(
        file,
        all[0]!.line,
        "CIVICRM_DSN is computed here (not one quoted string), so the recipe cannot read the database from it; write it as define('CIVICRM_DSN', 'mysql://user:password@host/database?new_link=true') or use the vm recipe with a mysql database",
      );
    }
    throw configError(file, undefined, "no define('CIVICRM_DSN', 'mysql://…') found; is this CiviCRM's settings file?");
  }
  const parsed = parseDsn(literal, 'CIVICRM_DSN');
  if (!parsed.ok) throw configError(file, literal.line, parsed.problem);
  return { url: parsed.url, line: literal.line };
}

function optionalDsn(settings: PhpSettings, name: string, file: string, env: RecipeEnv): { url: DatabaseUrl; line: number } | null {
  const literal = settings.defines.get(name)?.find((d) => d.value !== null);
  if (!literal) return null;
  const parsed = parseDsn(literal, name);
  if (!parsed.ok) {
    env.ctx.warn(`CiviCRM: ${file}:${literal.line}: ${parsed.problem}; that database is not backed up`);
    return null;
  }
  return { url: parsed.url, line: literal.line };
}

function parseDsn(literal: PhpValue, name: string): { ok: true; url: DatabaseUrl } | { ok: false; problem: string } {
  const value = literal.value!;
  if (value.includes('%%')) return { ok: false, problem: `${name} still holds the installer's placeholders (%%…%%); finish the CiviCRM installation first` };
  const parsed = parseDatabaseUrl(value);
  if (!parsed.ok) return { ok: false, problem: `cannot read ${name}: ${parsed.problem}` };
  if (parsed.value.scheme !== 'mysql' && parsed.value.scheme !== 'mysqli') {
    return { ok: false, problem: `${name} uses "${parsed.value.scheme}://", not a MySQL/MariaDB database` };
  }
  if (!parsed.value.database) return { ok: false, problem: `${name} names no database (mysql://user:password@host/database)` };
  return { ok: true, url: parsed.value };
}

function sameDatabase(a: DatabaseUrl, b: DatabaseUrl): boolean {
  return (a.socket ?? a.host ?? 'localhost') === (b.socket ?? b.host ?? 'localhost') && (a.port ?? 3306) === (b.port ?? 3306) && a.database === b.database;
}

export interface SiteLayout {
  /** [civicrm.files], [civicrm.private], [cms.root], [civicrm.root] when known. */
  tokens: Map<string, string>;
}

/** The site's well-known directories, from the settings file's own values first, else from where the file sits. */
function siteLayout(settingsFile: string, settings: PhpSettings): SiteLayout {
  const dir = path.dirname(settingsFile);
  const paths = new Map<string, string>();
  for (const a of settings.assignments) {
    if (a.variable === '$civicrm_paths' && a.keys.length === 2 && a.keys[1] === 'path' && a.value) paths.set(a.keys[0]!, a.value);
  }
  const lastLiteral = (name: string) => settings.defines.get(name)?.filter((d) => d.value !== null).at(-1)?.value ?? undefined;

  // The CMS root, from where the settings file sits.
  let cmsRoot: string | undefined = lastLiteral('CIVICRM_CMSDIR') ?? paths.get('cms.root');
  const segments = dir.split('/');
  const sitesAt = segments.lastIndexOf('sites');
  const wpAt = segments.lastIndexOf('wp-content');
  const adminAt = segments.lastIndexOf('administrator');
  if (!cmsRoot) {
    if (sitesAt > 0 && sitesAt === segments.length - 2) cmsRoot = segments.slice(0, sitesAt).join('/');
    else if (wpAt > 0) cmsRoot = segments.slice(0, wpAt).join('/');
    else if (adminAt > 0 && segments.slice(adminAt).join('/') === 'administrator/components/com_civicrm') cmsRoot = segments.slice(0, adminAt).join('/');
    else if (['private', 'data'].includes(path.basename(dir))) cmsRoot = path.dirname(dir);
    else cmsRoot = dir;
  }

  // [civicrm.files]: explicit, else the template cache's parent (CIVICRM_TEMPLATE_COMPILEDIR = <files>/templates_c/), else the layout's.
  let files = paths.get('civicrm.files');
  const compileDir = lastLiteral('CIVICRM_TEMPLATE_COMPILEDIR');
  if (!files && compileDir && /\/templates_c\/?$/.test(compileDir) && compileDir.startsWith('/')) files = path.dirname(compileDir.replace(/\/+$/, ''));
  if (!files) {
    const candidates: string[] = [];
    if (sitesAt > 0 && sitesAt === segments.length - 2) candidates.push(path.join(dir, 'files/civicrm'));
    if (wpAt > 0) {
      const wpContent = segments.slice(0, wpAt + 1).join('/');
      candidates.push(path.basename(dir) === 'civicrm' && segments[wpAt + 1] === 'uploads' ? dir : path.join(wpContent, 'uploads/civicrm'), path.join(wpContent, 'plugins/files/civicrm'));
    }
    if (adminAt > 0) candidates.push(path.join(cmsRoot, 'media/civicrm'));
    if (['private', 'data'].includes(path.basename(dir))) candidates.push(path.join(cmsRoot, 'public/media'), path.join(cmsRoot, 'web/upload'));
    candidates.push(path.join(cmsRoot, 'files/civicrm'));
    files = candidates.find((c) => existsSync(c)) ?? candidates[0];
  }
  const tokens = new Map<string, string>();
  if (files) tokens.set('civicrm.files', files.replace(/\/+$/, ''));
  const privateDir = paths.get('civicrm.private') ?? files;
  if (privateDir) tokens.set('civicrm.private', privateDir.replace(/\/+$/, ''));
  tokens.set('cms.root', cmsRoot.replace(/\/+$/, '') || '/');
  const civicrmRoot = paths.get('civicrm.root') ?? settings.assignments.filter((a) => a.variable === '$civicrm_root' && a.keys.length === 0 && a.value).at(-1)?.value;
  if (civicrmRoot) tokens.set('civicrm.root', civicrmRoot.replace(/\/+$/, ''));
  return { tokens };
}

/** `$civicrm_setting['<group>']['customFileUploadDir'] = '…';` — the last assignment wins, as when PHP runs it. */
function directorySettingsFromFile(settings: PhpSettings): Map<string, string> {
  const out = new Map<string, string>();
  const names = new Set<string>(DIRECTORY_SETTINGS.map((d) => d.name));
  for (const a of settings.assignments) {
    if (a.variable === '$civicrm_setting' && a.keys.length === 2 && names.has(a.keys[1]!) && a.value) out.set(a.keys[1]!, a.value);
  }
  return out;
}

/** Directory settings saved through the UI live in the database; reading them is best effort. */
async function directorySettingsFromDb(env: RecipeEnv, url: DatabaseUrl, settings: PhpSettings, names: string[], file: string): Promise<Map<string, string>> {
  const domain = Number(settings.defines.get('CIVICRM_DOMAIN_ID')?.find((d) => d.value !== null)?.value ?? '1');
  const host = url.socket ?? url.host ?? 'localhost';
  const connection: MysqlConnection = {
    host: host === 'localhost' ? (env.localMysqlSocket() ?? host) : host,
    port: url.port ?? 3306,
    user: url.user ?? 'root',
    database: url.database!,
    ...(url.password !== undefined ? { password: url.password } : {}),
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    // A database that hangs must not hold the backup: the directories then come from the file and defaults.
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('no answer within 15 s')), 15_000);
    });
    return await Promise.race([env.civicrmDirectorySettings(connection, names, Number.isInteger(domain) ? domain : 1), deadline]);
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0]!.slice(0, 200) : String(err);
    env.ctx.warn(`CiviCRM: could not read the directory settings from the database named in ${file} (${reason}); using the settings file and CiviCRM's default locations`);
    return new Map();
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves "[civicrm.files]/custom/" and relative paths (relative to the CMS root), as CiviCRM does. */
export function resolveCivicrmPath(value: string, layout: SiteLayout): { ok: true; path: string } | { ok: false; problem: string } {
  let out = value.trim();
  const token = /^\[([a-z.]+)\]/.exec(out);
  if (token) {
    const base = layout.tokens.get(token[1]!);
    if (!base) return { ok: false, problem: `the location of [${token[1]}] is not known` };
    out = base + out.slice(token[0].length);
  }
  if (!out.startsWith('/')) out = path.join(layout.tokens.get('cms.root') ?? '/', out);
  return { ok: true, path: path.posix.normalize(out).replace(/(.)\/+$/, '$1') };
}

/** The default reader: one query on civicrm_setting with mysql2 (values are PHP-serialized strings). */
export const readCivicrmDirectorySettings: CivicrmDirectorySettingsReader = async (db, names, domainId) => {
  const mysql = await import('mysql2/promise');
  const socketPath = db.host.startsWith('/') ? db.host : undefined;
  const connection = await mysql.createConnection({
    ...(socketPath ? { socketPath } : { host: db.host, port: db.port }),
    user: db.user,
    ...(db.password !== undefined ? { password: db.password } : {}),
    database: db.database,
    connectTimeout: 5000,
  });
  try {
    const [rows] = await connection.query('SELECT name, value FROM civicrm_setting WHERE domain_id = ? AND contact_id IS NULL AND name IN (?)', [domainId, names]);
    const out = new Map<string, string>();
    for (const row of rows as { name: string; value: string | Buffer | null }[]) {
      const value = row.value === null ? null : unserializePhpString(String(row.value));
      if (value) out.set(row.name, value);
    }
    return out;
  } finally {
    await connection.end().catch(() => {});
  }
};

/** `s:22:"[civicrm.files]/custom/";` → the string; anything else (b:0;, N;) → null. */
export function unserializePhpString(serialized: string): string | null {
  const m = /^s:(\d+):"([\s\S]*)";$/.exec(serialized.trim());
  if (!m) return null;
  const value = m[2]!;
  return Buffer.byteLength(value, 'utf8') === Number(m[1]) ? value : null;
}

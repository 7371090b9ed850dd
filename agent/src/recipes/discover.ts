import { readdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { Minimatch } from 'minimatch';
import { createLogger, describeError, parsePlanFile, stepKind, type PlanInput, type Recipe, type Step } from '@lifeboat/shared';
import type { JobContext } from '../sources/source.js';
import { SETTINGS_LOCATIONS } from './civicrm.js';
import { pathKind } from './common.js';
import { expandRecipe, type ExpandOptions } from './index.js';
import { CONFIG_FILE } from './pydio-cells.js';
import { dryRunSecretStore } from './secrets.js';

/**
 * `lifeboat-agent discover`: looks in the usual places for the applications we have recipes for and prints a
 * ready plan for what it found. Each find is also expanded as a backup would (reading files only: no database
 * or search engine is asked, no password file written), so the output says what the plan would back up, or
 * what needs fixing first.
 */

export interface DiscoverRoots {
  /** Where CiviCRM site roots are looked for, a few levels deep (globs allowed). */
  civicrm: string[];
  /** Chatwoot installation directories (globs allowed). */
  chatwoot: string[];
  /** Pydio Cells working directories (globs allowed). */
  pydioCells: string[];
  /** systemd unit directories, read for CELLS_WORKING_DIR. */
  systemdUnits: string[];
  /** Liferay Home candidates (globs allowed). */
  liferay: string[];
}

export const DEFAULT_DISCOVER_ROOTS: DiscoverRoots = {
  civicrm: ['/var/www', '/srv/www', '/srv/http', '/usr/share/nginx'],
  chatwoot: ['/home/chatwoot/chatwoot', '/opt/chatwoot', '/srv/chatwoot'],
  pydioCells: ['/root/.config/pydio/cells', '/home/*/.config/pydio/cells', '/var/cells', '/var/lib/cells', '/opt/cells', '/opt/pydio/cells'],
  systemdUnits: ['/etc/systemd/system', '/lib/systemd/system'],
  liferay: ['/opt/liferay*', '/opt/liferay*/*', '/var/liferay*'],
};

export interface Discovered {
  recipe: Recipe['name'];
  /** What the plan's recipe.path will be. */
  path: string;
  /** One line per step the recipe expands to, or empty when it could not expand. */
  steps: string[];
  warnings: string[];
  /** Why the recipe cannot run as it is (its error), when it cannot. */
  problem?: string;
}

/** Directory names never descended into while looking for CiviCRM site roots (big, or inside a site). */
const SKIP_DIRS = new Set(['node_modules', 'vendor', 'wp-includes', 'wp-admin', 'wp-content', 'sites', 'core', 'modules', 'themes', 'profiles', 'libraries', 'files', 'uploads', 'media', 'cache', 'tmp', 'administrator', 'components', 'private', 'data', 'log', 'logs']);

/** Expands simple globs ("*" and friends inside path segments) to the existing directories they match. */
export async function expandGlob(pattern: string): Promise<string[]> {
  const parts = path.resolve(pattern).split('/').filter(Boolean);
  let current = ['/'];
  for (const part of parts) {
    const next: string[] = [];
    if (!/[*?[]/.test(part)) {
      for (const dir of current) next.push(path.join(dir, part));
    } else {
      const matcher = new Minimatch(part, { dot: false });
      for (const dir of current) {
        const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
        for (const e of entries) if ((e.isDirectory() || e.isSymbolicLink()) && matcher.match(e.name)) next.push(path.join(dir, e.name));
      }
    }
    current = next;
  }
  const out: string[] = [];
  for (const p of current) if ((await pathKind(p)) === 'dir') out.push(p);
  return out.sort();
}

async function findCivicrmSites(roots: readonly string[], limits = { maxDepth: 4, maxDirs: 5000 }): Promise<string[]> {
  const found: string[] = [];
  let visited = 0;
  const roots2 = (await Promise.all(roots.map(expandGlob))).flat();
  let queue = roots2.map((dir) => ({ dir, depth: 0 }));
  while (queue.length) {
    const next: typeof queue = [];
    for (const { dir, depth } of queue) {
      if (++visited > limits.maxDirs) return found;
      const settings = await civicrmSettingsIn(dir);
      if (settings.length) {
        found.push(...settings);
        continue;
      }
      if (depth >= limits.maxDepth) continue;
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory() && !e.name.startsWith('.') && !SKIP_DIRS.has(e.name)) next.push({ dir: path.join(dir, e.name), depth: depth + 1 });
    }
    queue = next;
  }
  return [...new Set(found)].sort();
}

/** The settings files of the site rooted at `dir`: the usual place, or each site of a Drupal multisite. */
async function civicrmSettingsIn(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const rel of SETTINGS_LOCATIONS) {
    if (rel === 'civicrm.settings.php' && (await pathKind(path.join(dir, 'settings.php'))) !== 'file') continue; // Backdrop root only
    if ((await pathKind(path.join(dir, rel))) === 'file') {
      out.push(path.join(dir, rel));
      break;
    }
  }
  for (const sitesDir of ['sites', 'web/sites', 'docroot/sites']) {
    const entries = await readdir(path.join(dir, sitesDir), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isDirectory() || e.name === 'default' || e.name === 'all') continue;
      const file = path.join(dir, sitesDir, e.name, 'civicrm.settings.php');
      if ((await pathKind(file)) === 'file') out.push(file);
    }
  }
  return out;
}

async function findChatwoot(roots: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const dir of (await Promise.all(roots.map(expandGlob))).flat()) {
    if ((await pathKind(path.join(dir, '.env'))) !== 'file') continue;
    const markers = ['config/database.yml', 'Procfile', 'docker-compose.yaml', 'docker-compose.yml'];
    let isChatwoot = false;
    for (const m of markers) if ((await pathKind(path.join(dir, m))) === 'file') isChatwoot = true;
    const env = await readFile(path.join(dir, '.env'), 'utf8').catch(() => '');
    if (isChatwoot && /^\s*(export\s+)?(SECRET_KEY_BASE|FRONTEND_URL|POSTGRES_HOST|DATABASE_URL)\s*=/m.test(env)) out.push(dir);
  }
  return out;
}

async function findPydioCells(roots: readonly string[], unitDirs: readonly string[]): Promise<string[]> {
  const candidates = (await Promise.all(roots.map(expandGlob))).flat();
  // A Cells service names its working directory with CELLS_WORKING_DIR.
  for (const unitDir of unitDirs) {
    const names = await readdir(unitDir).catch(() => [] as string[]);
    for (const name of names.filter((n) => n.endsWith('.service'))) {
      const text = await readFile(path.join(unitDir, name), 'utf8').catch(() => '');
      for (const m of text.matchAll(/CELLS_WORKING_DIR=("?)([^\s"]+)\1/g)) candidates.push(m[2]!);
    }
  }
  const out: string[] = [];
  for (const dir of [...new Set(candidates.map((c) => path.resolve(c)))]) {
    if ((await pathKind(path.join(dir, CONFIG_FILE))) === 'file') out.push(dir);
  }
  return out.sort();
}

async function findLiferay(roots: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const dir of (await Promise.all(roots.map(expandGlob))).flat()) {
    if ((await pathKind(path.join(dir, 'osgi'))) !== 'dir') continue;
    const entries = await readdir(dir).catch(() => [] as string[]);
    if (entries.some((n) => n === 'data' || n === 'portal-ext.properties' || n === 'portal-setup-wizard.properties' || /^tomcat/i.test(n))) out.push(dir);
  }
  return [...new Set(out)].sort();
}

function describeStep(step: Step): string {
  const kind = stepKind(step);
  if (step.postgres) return `postgres: database ${step.postgres.database} on ${step.postgres.host}:${step.postgres.port} as ${step.postgres.user}${step.postgres.passwordFile ? ' (password from the app config)' : ''}`;
  if (step.mysql) {
    const dbs = step.mysql.databases === 'all' ? 'all databases' : `database ${step.mysql.databases.join(', ')}`;
    return `mysql: ${dbs} on ${step.mysql.host}${step.mysql.host.startsWith('/') ? '' : `:${step.mysql.port}`} as ${step.mysql.user}${step.mysql.passwordFile ? ' (password from the app config)' : ''}`;
  }
  if (step.command) return `command: ${step.command.name}`;
  if (step.files) return `files: ${step.files.paths.join(', ')}`;
  return kind;
}

/** Finds the applications and says, for each, what its recipe would back up (files only are read). */
export async function discoverApplications(roots: DiscoverRoots = DEFAULT_DISCOVER_ROOTS, options: ExpandOptions = {}): Promise<Discovered[]> {
  const finds: { recipe: Recipe['name']; path: string }[] = [
    ...(await findCivicrmSites(roots.civicrm)).map((p) => ({ recipe: 'civicrm' as const, path: p })),
    ...(await findChatwoot(roots.chatwoot)).map((p) => ({ recipe: 'chatwoot' as const, path: p })),
    ...(await findPydioCells(roots.pydioCells, roots.systemdUnits)).map((p) => ({ recipe: 'pydio-cells' as const, path: p })),
    ...(await findLiferay(roots.liferay)).map((p) => ({ recipe: 'liferay' as const, path: p })),
  ];
  const out: Discovered[] = [];
  for (const find of finds) {
    const warnings: string[] = [];
    const ctx: JobContext = {
      jobId: 'discover',
      signal: new AbortController().signal,
      log: createLogger('discover', { write: () => {} }),
      warn: (message) => warnings.push(message),
      progress: () => {},
    };
    try {
      const steps = await expandRecipe({ name: find.recipe, path: find.path }, ctx, { ...options, online: false, secrets: dryRunSecretStore() });
      out.push({ ...find, steps: steps.map(describeStep), warnings });
    } catch (err) {
      out.push({ ...find, steps: [], warnings, problem: describeError(err).message });
    }
  }
  return out;
}

function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '')
    .replace(/-{2,}/g, '-');
}

/** A plan id per find: the recipe's name, or recipe-<where> when the machine has several of one kind. */
function planIds(found: readonly Discovered[]): string[] {
  const taken = new Set<string>();
  const where = (f: Discovered) =>
    (f.recipe === 'civicrm' ? f.path.replace(/\/(web\/|docroot\/)?(sites\/[^/]+|wp-content\/.*|administrator\/.*|private|data)?\/?civicrm\.settings\.php$/, '') : f.path).split('/').filter(Boolean);
  return found.map((f) => {
    const group = found.filter((g) => g.recipe === f.recipe);
    let base = f.recipe as string;
    if (group.length > 1) {
      // What tells this one from the others of its kind: the path after their common beginning.
      const mine = where(f);
      const others = group.map(where);
      let common = 0;
      while (common < mine.length && others.every((o) => o[common] === mine[common])) common++;
      const meaningful = mine.slice(common).filter((s) => !['www', 'html', 'htdocs', 'public_html', 'httpdocs', '.config', 'pydio', 'cells'].includes(s));
      base = `${f.recipe}-${slug(meaningful.slice(0, 2).join('-')) || 'site'}`;
    }
    base = base.slice(0, 60);
    let id = base;
    for (let n = 2; taken.has(id); n++) id = `${base}-${n}`;
    taken.add(id);
    return id;
  });
}

export interface DiscoverReport {
  agent: string;
  /** Where the agent's name came from. */
  agentSource: string;
  found: Discovered[];
  /** The plans for the finds that expand cleanly; `lifeboat plan apply` takes them as they are. */
  plans: PlanInput[];
}

export function discoverReport(found: Discovered[], agent: string, agentSource: string): DiscoverReport {
  const ids = planIds(found);
  const plans: PlanInput[] = [];
  found.forEach((f, i) => {
    if (!f.problem) plans.push({ id: ids[i]!, agent, schedule: '0 3 * * *', recipe: { name: f.recipe, path: f.path } });
  });
  if (plans.length) {
    // What we print must be what `plan apply` accepts.
    const check = parsePlanFile({ plans });
    if (!check.ok) throw new Error(`discover built an invalid plan: ${check.problems.join('; ')}`);
  }
  return { agent, agentSource, found, plans };
}

const q = (s: string) => JSON.stringify(s);

/** The plan file as YAML (strings JSON-quoted, which YAML reads as they are), what was found as comments. */
export function renderDiscoverYaml(report: DiscoverReport): string {
  const lines: string[] = [];
  if (report.found.length === 0) {
    return '# lifeboat-agent discover found no CiviCRM, Chatwoot, Pydio Cells or Liferay installation in the usual places.\n# Write a plan with steps, or the vm recipe (paths and databases), instead.\n';
  }
  lines.push(`# Found by lifeboat-agent discover (agent name ${q(report.agent)}: ${report.agentSource}).`);
  lines.push('# Review, then: lifeboat plan apply plans.yaml');
  const ids = planIds(report.found);
  report.found.forEach((f, i) => {
    lines.push('#');
    lines.push(`# ${f.recipe} at ${f.path}${f.problem ? ' (needs attention, not in the plans below)' : ` → plan ${ids[i]}`}`);
    for (const s of f.steps) lines.push(`#   ${s}`);
    for (const w of f.warnings) lines.push(`#   warning: ${w.replace(/\n/g, ' ')}`);
    if (f.problem) lines.push(`#   problem: ${f.problem.replace(/\n/g, ' ')}`);
  });
  if (report.plans.length === 0) {
    lines.push('#', '# No plan written: fix the problems above and run discover again.');
    return lines.join('\n') + '\n';
  }
  lines.push('plans:');
  for (const plan of report.plans) {
    lines.push(`  - id: ${q(plan.id)}`);
    lines.push(`    agent: ${q(plan.agent)}`);
    lines.push(`    schedule: ${q(plan.schedule!)}`);
    lines.push('    recipe:');
    lines.push(`      name: ${q(plan.recipe!.name)}`);
    lines.push(`      path: ${q(plan.recipe!.path!)}`);
  }
  return lines.join('\n') + '\n';
}

/** This agent's name: from its config when there is one, else the host name (enroll's default). */
export async function agentName(configPath: string, load: (p: string) => Promise<{ name: string }>): Promise<{ name: string; source: string }> {
  try {
    const config = await load(configPath);
    return { name: config.name, source: `from ${configPath}` };
  } catch {
    const name = slug(hostname().split('.')[0] ?? 'agent') || 'agent';
    return { name, source: `this host's name; no readable agent config at ${configPath} — use the name given at enrollment` };
  }
}

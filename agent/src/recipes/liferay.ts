import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { LifeboatError, type Recipe, type Step } from '@lifeboat/shared';
import { configError, filesStep, finishSteps, isInside, note, passwordOption, pathKind, readConfigFile, warnIfUnresolvable, type RecipeEnv } from './common.js';
import { parseJavaPropertiesList, PropertiesSyntaxError } from './parse/java-properties.js';
import { parseJdbcUrl, type JdbcDatabase } from './parse/jdbc-url.js';
import { OsgiConfigSyntaxError, parseOsgiConfig, type OsgiEntry } from './parse/osgi-config.js';
import { secretKey } from './secrets.js';

/**
 * Liferay DXP (after "Backing Up" in its installation guide): the database named by jdbc.default.* in the
 * portal properties, a snapshot of the search indexes through the Elasticsearch/OpenSearch REST API when a
 * remote search engine is configured, then Liferay Home — the portal and system properties files, data/,
 * osgi/, license/, logs/ — the application server beside it (its temp/ and work/ caches left out), and the
 * Documents and Media store when it is configured outside Liferay Home.
 */

/** Read in this order, the last definition winning (portal.properties' include-and-override list). */
const PORTAL_PROPERTIES = ['portal-bundle.properties', 'portal-ext.properties', 'portal-setup-wizard.properties'];
const HOME_FILES = [...PORTAL_PROPERTIES, 'system-ext.properties'];
const HOME_DIRS = ['data', 'osgi', 'license', 'logs'];
const APP_SERVER = /^(tomcat|wildfly|jboss|glassfish|payara)([-_.].*)?$/i;

interface PropertyValue {
  value: string;
  file: string;
  line: number;
}

class PortalProperties {
  readonly files: string[] = [];
  private readonly values = new Map<string, PropertyValue>();

  get(key: string): PropertyValue | undefined {
    const v = this.values.get(key);
    return v && v.value.trim() !== '' ? v : undefined;
  }

  set(key: string, value: PropertyValue): void {
    this.values.set(key, value);
  }
}

/** Liferay Home's portal properties, as Liferay reads them: classpath and home copies, includes followed. */
export async function loadPortalProperties(home: string, appServers: readonly string[]): Promise<PortalProperties> {
  const props = new PortalProperties();
  const seen = new Set<string>();
  const classes = appServers.map((server) => path.join(server, 'webapps/ROOT/WEB-INF/classes'));
  const load = async (file: string, depth: number): Promise<void> => {
    if (seen.has(file) || depth > 10 || (await pathKind(file)) !== 'file') return;
    seen.add(file);
    const text = await readConfigFile(file, 'Liferay properties file');
    let entries: ReturnType<typeof parseJavaPropertiesList>;
    try {
      entries = parseJavaPropertiesList(text);
    } catch (err) {
      if (err instanceof PropertiesSyntaxError) throw configError(file, err.line, err.message);
      throw err;
    }
    props.files.push(file);
    const includes: string[] = [];
    for (const entry of entries) {
      if (entry.key === 'include-and-override') includes.push(...entry.value.split(',').map((s) => s.trim()).filter(Boolean));
      else props.set(entry.key, { value: entry.value, file, line: entry.line });
    }
    // Included files override the including one.
    for (const include of includes) {
      if (include.includes('${external-properties}')) continue;
      const resolved = include.replaceAll('${liferay.home}', home);
      if (resolved.includes('${')) continue;
      await load(path.isAbsolute(resolved) ? resolved : path.join(home, resolved), depth + 1);
    }
  };
  for (const name of PORTAL_PROPERTIES) {
    for (const dir of classes) await load(path.join(dir, name), 0);
    await load(path.join(home, name), 0);
  }
  return props;
}

export async function expandLiferay(recipe: Recipe, env: RecipeEnv): Promise<Step[]> {
  const given = recipe.path!;
  const kind = await pathKind(given);
  if (kind === null) throw new LifeboatError('path_not_found', `Liferay: nothing at ${given}; give Liferay Home (the folder holding portal-ext.properties, osgi/ and data/)`);
  const home = kind === 'file' ? path.dirname(given) : given;
  const entries = await readdir(home, { withFileTypes: true }).catch(() => []);
  const names = new Set(entries.map((e) => e.name));
  if (!names.has('osgi') && !names.has('portal-ext.properties') && !names.has('portal-setup-wizard.properties')) {
    throw new LifeboatError('path_not_found', `Liferay: ${home} does not look like Liferay Home (no portal-ext.properties, portal-setup-wizard.properties or osgi/)`);
  }
  const appServers = entries.filter((e) => e.isDirectory() && APP_SERVER.test(e.name)).map((e) => path.join(home, e.name));
  const props = await loadPortalProperties(home, appServers);
  const steps: unknown[] = [];

  // 1. The database.
  const database = await liferayDatabase(props, home, env);
  if (database) {
    const { db, source } = database;
    const host = db.socket ?? db.host;
    await warnIfUnresolvable(env, host, `Liferay's ${source}`);
    const password = await passwordOption(env, recipe, secretKey('liferay', home, 'db'), db.password);
    const common = { host, ...(db.port !== undefined ? { port: db.port } : {}), ...(db.user ? { user: db.user } : {}), ...password };
    steps.push(db.kind === 'postgres' ? { postgres: { database: db.database, ...common } } : { mysql: { databases: [db.database], ...common } });
  } else {
    await env.secrets.remove(secretKey('liferay', home, 'db'));
  }

  // 2. The search indexes, through the search engine's snapshot API.
  const snapshot = await searchSnapshotStep(home, env);
  if (snapshot) steps.push(snapshot);

  // 3. Files: Liferay Home's pieces, the application server, an outside Documents and Media store.
  const paths: string[] = [];
  for (const name of HOME_FILES) if ((await pathKind(path.join(home, name))) === 'file') paths.push(path.join(home, name));
  for (const file of props.files) if (!paths.includes(file)) paths.push(file);
  for (const name of HOME_DIRS) {
    const dir = path.join(home, name);
    if ((await pathKind(dir)) === 'dir') paths.push(dir);
    else note(env, `Liferay: ${dir} does not exist; skipped`);
  }
  const exclude: string[] = [];
  for (const server of appServers) {
    paths.push(server);
    // Caches the server rebuilds: copying them only costs time.
    exclude.push(`${server}/temp/**`, `${server}/work/**`);
  }
  const store = await documentStore(props, home, env);
  if (store) paths.push(store);
  const files = filesStep(paths, recipe, exclude);
  if (files) steps.push(files);
  return finishSteps('liferay', `${home}'s portal properties`, steps);
}

async function liferayDatabase(props: PortalProperties, home: string, env: RecipeEnv): Promise<{ db: JdbcDatabase; source: string } | null> {
  const jndi = props.get('jdbc.default.jndi.name');
  const url = props.get('jdbc.default.url');
  if (jndi && !url) {
    throw configError(
      jndi.file,
      jndi.line,
      `the database is a JNDI data source (${jndi.value}) defined in the application server, which this recipe does not read; use the vm recipe with the database as a step`,
    );
  }
  if (!url || /^jdbc:hsqldb:/i.test(url.value)) {
    env.ctx.warn(
      `Liferay at ${home} uses its embedded Hypersonic database (no jdbc.default.url, or an hsqldb one): it is only copied with data/ while Liferay runs and may be inconsistent; Hypersonic is for demos — move to MySQL/MariaDB or PostgreSQL for production`,
    );
    return null;
  }
  const parsed = parseJdbcUrl(url.value);
  if (!parsed.ok) throw configError(url.file, url.line, `jdbc.default.url: ${parsed.problem}`);
  const db = parsed.value;
  const user = props.get('jdbc.default.username');
  if (user) db.user = user.value;
  const password = props.get('jdbc.default.password');
  if (password) db.password = password.value;
  if (db.otherHosts.length) env.ctx.warn(`Liferay: jdbc.default.url lists several database hosts; the dump reads from the first, ${db.host}`);
  return { db, source: `${url.file}:${url.line}` };
}

/** Where Documents and Media keep files, when it is not data/document_library inside Liferay Home. */
async function documentStore(props: PortalProperties, home: string, env: RecipeEnv): Promise<string | null> {
  const impl = props.get('dl.store.impl')?.value ?? '';
  if (/S3Store|GCSStore|AzureStore/i.test(impl)) {
    env.ctx.warn(`Liferay: Documents and Media are stored remotely (dl.store.impl=${impl}); they are not in this backup — back them up with that storage provider`);
    return null;
  }
  let rootDir = props.get('dl.store.file.system.root.dir')?.value;
  const configs = path.join(home, 'osgi/configs');
  for (const name of [
    'com.liferay.portal.store.file.system.configuration.FileSystemStoreConfiguration.config',
    'com.liferay.portal.store.file.system.configuration.AdvancedFileSystemStoreConfiguration.config',
  ]) {
    const file = path.join(configs, name);
    if ((await pathKind(file)) !== 'file') continue;
    const entry = (await readOsgiConfig(file)).get('rootDir');
    if (entry && typeof entry.value === 'string' && entry.value) rootDir = entry.value;
  }
  if (!rootDir) return null;
  const resolved = path.resolve(home, rootDir.replaceAll('${liferay.home}', home));
  if (isInside(resolved, home)) return null;
  if ((await pathKind(resolved)) === 'dir') return resolved;
  env.ctx.warn(`Liferay: the Documents and Media folder ${resolved} (rootDir) does not exist on this machine; not backed up`);
  return null;
}

async function readOsgiConfig(file: string): Promise<Map<string, OsgiEntry>> {
  const text = await readConfigFile(file, 'Liferay OSGi configuration');
  try {
    return parseOsgiConfig(text, file);
  } catch (err) {
    if (err instanceof OsgiConfigSyntaxError) throw configError(file, err.line, err.message);
    throw err;
  }
}

// ── search indexes ─────────────────────────────────────────────────────────────────────────────────────────

export interface SearchConnection {
  engine: 'Elasticsearch' | 'OpenSearch';
  /** The REST endpoint, e.g. http://es1:9200, without credentials. */
  url: string;
  username?: string;
  password?: string;
  /** The config file it came from. */
  file: string;
}

const SEARCH_CONFIG = /^com\.liferay\.portal\.search\.(elasticsearch\d*|opensearch\d*)\..*\.(config|cfg)$/;
const MAIN_CONFIG = /\.(ElasticsearchConfiguration|OpenSearchConfiguration)\.(config|cfg)$/;
const CONNECTION_CONFIG = /\.(ElasticsearchConnectionConfiguration|OpenSearchConnectionConfiguration)([-~][^.]+)?\.(config|cfg)$/;

const scalar = (entry: OsgiEntry | undefined): string | undefined => (entry === undefined ? undefined : Array.isArray(entry.value) ? entry.value[0] : entry.value);
const list = (entry: OsgiEntry | undefined): string[] => (entry === undefined ? [] : Array.isArray(entry.value) ? entry.value : entry.value.split(',').map((s) => s.trim()).filter(Boolean));
const isTrue = (entry: OsgiEntry | undefined) => scalar(entry)?.toLowerCase() === 'true';

/** The remote search engine Liferay is configured to use, or why there is none to snapshot. */
export async function findSearchConnection(home: string): Promise<{ connection: SearchConnection } | { skip: string }> {
  const dir = path.join(home, 'osgi/configs');
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => SEARCH_CONFIG.test(n)).sort();
  const configs: { name: string; engine: SearchConnection['engine']; version: number; entries: Map<string, OsgiEntry> }[] = [];
  for (const name of names) {
    const family = SEARCH_CONFIG.exec(name)![1]!;
    configs.push({
      name,
      engine: family.startsWith('opensearch') ? 'OpenSearch' : 'Elasticsearch',
      version: Number(/\d+/.exec(family)?.[0] ?? '0'),
      entries: await readOsgiConfig(path.join(dir, name)),
    });
  }
  const sidecar = `no remote Elasticsearch/OpenSearch is configured in ${dir} (Liferay runs its sidecar/embedded search, whose indexes are in data/ and can be rebuilt by a full reindex); no search snapshot taken`;
  if (configs.length === 0) return { skip: sidecar };
  // OpenSearch first (when it is configured, it is the one in use), then the newest Elasticsearch connector.
  const byPreference = [...configs].sort((a, b) => (a.engine === b.engine ? b.version - a.version : a.engine === 'OpenSearch' ? -1 : 1));
  const engine = byPreference[0]!.engine;
  const version = byPreference[0]!.version;
  const family = byPreference.filter((c) => c.engine === engine && c.version === version);
  const main = family.find((c) => MAIN_CONFIG.test(c.name));
  const connections = family.filter((c) => CONNECTION_CONFIG.test(c.name));
  const mode = scalar(main?.entries.get('operationMode'))?.toUpperCase();
  const remote = engine === 'OpenSearch' || isTrue(main?.entries.get('productionModeEnabled')) || mode === 'REMOTE';
  if (!remote) return { skip: sidecar };
  const connectionId = scalar(main?.entries.get('remoteClusterConnectionId'));
  const chosen =
    (connectionId ? connections.find((c) => scalar(c.entries.get('connectionId')) === connectionId) : undefined) ??
    (main && list(main.entries.get('networkHostAddresses')).length ? main : undefined) ??
    connections.find((c) => list(c.entries.get('networkHostAddresses')).length);
  const addresses = chosen ? list(chosen.entries.get('networkHostAddresses')) : [];
  if (addresses.length === 0) {
    const transport = main && list(main.entries.get('transportAddresses')).length;
    return {
      skip: transport
        ? `Liferay's ${engine} ${version} connector is configured with transport addresses only (port 9300) in ${dir}; the snapshot API needs the REST address (port 9200), which the config does not name; no search snapshot taken — snapshot the indexes on the ${engine} side`
        : `Liferay is set to a remote ${engine} but no networkHostAddresses are configured in ${dir}; no search snapshot taken`,
    };
  }
  const ssl = isTrue(chosen!.entries.get('httpSSLEnabled'));
  let address = addresses[0]!.trim();
  if (!/^https?:\/\//i.test(address)) address = `${ssl ? 'https' : 'http'}://${address}`;
  let parsed: URL;
  try {
    parsed = new URL(address);
  } catch {
    return { skip: `Liferay's ${engine} address "${addresses[0]}" (${chosen!.name}) is not a URL; no search snapshot taken` };
  }
  const connection: SearchConnection = { engine, url: `${parsed.protocol}//${parsed.host}${parsed.pathname.replace(/\/+$/, '')}`, file: path.join(dir, chosen!.name) };
  const auth = isTrue(chosen!.entries.get('authenticationEnabled')) || isTrue(main?.entries.get('authenticationEnabled'));
  const username = scalar(chosen!.entries.get('username')) ?? scalar(main?.entries.get('username'));
  const password = scalar(chosen!.entries.get('password')) ?? scalar(main?.entries.get('password'));
  if (auth && username) {
    connection.username = username;
    if (password) connection.password = password;
  }
  // Credentials written into the URL go the same way as configured ones: never into argv.
  if (parsed.username) {
    connection.username = decodeURIComponent(parsed.username);
    if (parsed.password) connection.password = decodeURIComponent(parsed.password);
  }
  return { connection };
}

/** The snapshot repository to use: one named "lifeboat", else the only one registered. */
export function chooseSnapshotRepository(repositories: readonly string[]): { repository: string } | { problem: string } {
  if (repositories.includes('lifeboat')) return { repository: 'lifeboat' };
  if (repositories.length === 1) return { repository: repositories[0]! };
  if (repositories.length === 0) {
    return {
      problem:
        'it has no snapshot repository; register one named "lifeboat" (e.g. PUT _snapshot/lifeboat {"type":"fs","settings":{"location":"/backups/lifeboat"}} with that folder in path.repo)',
    };
  }
  return { problem: `it has several snapshot repositories (${repositories.join(', ')}) and none named "lifeboat"; register one named "lifeboat" for these snapshots` };
}

/**
 * The script the command step runs with this agent's own Node (`node -e SCRIPT -- URL REPO NAME USER PASSFILE`,
 * no shell): requests the snapshot and waits for it, prints the engine's answer (the artifact), and exits
 * non-zero unless the snapshot's state is SUCCESS — a PARTIAL or FAILED snapshot is a failed step, not a
 * success. The password is read from its file, so it is never in argv.
 */
export const SNAPSHOT_SCRIPT = `
// "-" stands for "none" (an argv item cannot be empty).
const [url, repo, name, userArg, passArg] = process.argv.slice(1);
const user = userArg === '-' ? '' : userArg;
const passFile = passArg === '-' ? '' : passArg;
const headers = { accept: 'application/json' };
if (user) {
  const pass = passFile ? require('fs').readFileSync(passFile, 'utf8') : '';
  headers.authorization = 'Basic ' + Buffer.from(user + ':' + pass).toString('base64');
}
const target = url + '/_snapshot/' + encodeURIComponent(repo) + '/' + encodeURIComponent(name) + '?wait_for_completion=true';
fetch(target, { method: 'PUT', headers })
  .then(async (res) => {
    const text = await res.text();
    if (!res.ok) {
      process.stderr.write('snapshot request to ' + url + ' failed: HTTP ' + res.status + ' ' + text.slice(0, 2000) + '\\n');
      process.exit(1);
    }
    let body;
    try { body = JSON.parse(text); } catch { process.stderr.write('the snapshot answer is not JSON: ' + text.slice(0, 500) + '\\n'); process.exit(1); }
    const snapshot = body && body.snapshot;
    process.stdout.write(text + '\\n');
    if (!snapshot || snapshot.state !== 'SUCCESS') {
      const failures = snapshot && Array.isArray(snapshot.failures) ? snapshot.failures.slice(0, 5).map((f) => f.index + ': ' + f.reason).join('; ') : '';
      process.stderr.write('snapshot ' + name + ' in repository ' + repo + ' ended ' + ((snapshot && snapshot.state) || 'without a state') + (failures ? ': ' + failures : '') + '\\n');
      process.exit(1);
    }
  })
  .catch((err) => {
    process.stderr.write('cannot reach ' + url + ': ' + ((err && err.cause && (err.cause.code || err.cause.message)) || (err && err.message) || err) + '\\n');
    process.exit(1);
  });
`;

/** A snapshot name the engine accepts (lowercase, no spaces), unique per job. */
export function snapshotName(jobId: string, now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').toLowerCase();
  return `lifeboat-${stamp}-${jobId.toLowerCase().replace(/[^a-z0-9_-]/g, '-')}`.slice(0, 200);
}

async function searchSnapshotStep(home: string, env: RecipeEnv): Promise<unknown> {
  const found = await findSearchConnection(home);
  const credentialKey = secretKey('liferay', home, 'search');
  if ('skip' in found) {
    env.ctx.warn(`Liferay: ${found.skip}`);
    await env.secrets.remove(credentialKey);
    return null;
  }
  const { connection } = found;
  let repository = 'lifeboat';
  if (env.online) {
    const repos = await listSnapshotRepositories(connection, env);
    if (!repos.ok) {
      env.ctx.warn(`Liferay: ${connection.engine} at ${connection.url} (${connection.file}): ${repos.problem}; no search snapshot taken`);
      return null;
    }
    const chosen = chooseSnapshotRepository(repos.names);
    if ('problem' in chosen) {
      env.ctx.warn(`Liferay: ${connection.engine} at ${connection.url}: ${chosen.problem}; no search snapshot taken`);
      return null;
    }
    repository = chosen.repository;
  }
  let passwordFile = '';
  if (connection.username && connection.password) passwordFile = await env.secrets.put(credentialKey, connection.password);
  else await env.secrets.remove(credentialKey);
  return {
    command: {
      name: `${connection.engine.toLowerCase()}-snapshot`,
      run: [process.execPath, '-e', SNAPSHOT_SCRIPT, '--', connection.url, repository, snapshotName(env.ctx.jobId, env.now()), connection.username ?? '', passwordFile].map((a) => (a === '' ? '-' : a)),
      timeout: '6h',
    },
  };
}

/** GET /_snapshot: the registered repositories' names. */
async function listSnapshotRepositories(connection: SearchConnection, env: RecipeEnv): Promise<{ ok: true; names: string[] } | { ok: false; problem: string }> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (connection.username) headers.authorization = 'Basic ' + Buffer.from(`${connection.username}:${connection.password ?? ''}`).toString('base64');
  try {
    const res = await env.fetch(`${connection.url}/_snapshot`, { headers, signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    if (!res.ok) return { ok: false, problem: `listing its snapshot repositories answered HTTP ${res.status}` };
    const body = JSON.parse(text) as unknown;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, problem: 'its snapshot repository list is not a JSON object' };
    return { ok: true, names: Object.keys(body).sort() };
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const reason = cause?.code ?? cause?.message ?? (err instanceof Error ? `${err.name}: ${err.message}` : 'error');
    return { ok: false, problem: `it did not answer (${reason})` };
  }
}

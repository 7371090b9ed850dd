import path from 'node:path';
import { LifeboatError, type PostgresStepOptions, type Recipe, type Step } from '@lifeboat/shared';
import { configError, filesStep, finishSteps, note, passwordOption, pathKind, readConfigFile, warnIfUnresolvable, type RecipeEnv } from './common.js';
import { parseDatabaseUrl } from './parse/db-url.js';
import { DotenvSyntaxError, parseDotenv, type EnvEntry } from './parse/dotenv.js';
import { secretKey } from './secrets.js';

/**
 * Chatwoot (after its self-hosted guide, "Backing Up Your Chatwoot Installation"): the PostgreSQL database,
 * then the `storage/` folder when uploads are stored locally (ACTIVE_STORAGE_SERVICE=local, the default), then
 * the `.env` holding the configuration. The database comes from the same `.env` Rails reads: DATABASE_URL when
 * set, else POSTGRES_HOST/PORT/USERNAME/PASSWORD/DATABASE with Chatwoot's own defaults (config/database.yml).
 */

/** Chatwoot's config/database.yml defaults for production. */
const DEFAULTS = { host: 'localhost', port: 5432, user: 'postgres', database: 'chatwoot_production' } as const;

export interface ChatwootInstall {
  dir: string;
  envFile: string;
  database: { host: string; port: number; user: string; database: string; password?: string };
  /** ACTIVE_STORAGE_SERVICE, "local" when unset. */
  storageService: string;
}

export async function readChatwootInstall(given: string): Promise<ChatwootInstall> {
  const kind = await pathKind(given);
  if (kind === null) throw new LifeboatError('path_not_found', `Chatwoot: nothing at ${given}; give the installation directory (the one holding .env)`);
  const dir = kind === 'file' ? path.dirname(given) : given;
  const envFile = kind === 'file' ? given : path.join(dir, '.env');
  const text = await readConfigFile(envFile, "Chatwoot's .env");
  let env: Map<string, EnvEntry>;
  try {
    env = parseDotenv(text);
  } catch (err) {
    if (err instanceof DotenvSyntaxError) throw configError(envFile, err.line, err.message);
    throw err;
  }
  const get = (key: string) => {
    const entry = env.get(key);
    return entry && entry.value !== '' ? entry : undefined;
  };

  const database: ChatwootInstall['database'] = { ...DEFAULTS };
  const url = get('DATABASE_URL');
  if (url) {
    const parsed = parseDatabaseUrl(url.value);
    if (!parsed.ok) throw configError(envFile, url.line, `cannot read DATABASE_URL: ${parsed.problem}`);
    const u = parsed.value;
    if (u.scheme !== 'postgres' && u.scheme !== 'postgresql') throw configError(envFile, url.line, `DATABASE_URL uses "${u.scheme}://"; Chatwoot runs on PostgreSQL (postgres://…)`);
    database.host = u.socket ?? u.host ?? DEFAULTS.host;
    if (u.port !== undefined) database.port = u.port;
    if (u.user) database.user = u.user;
    database.database = u.database ?? get('POSTGRES_DATABASE')?.value ?? DEFAULTS.database;
    if (u.password) database.password = u.password;
  } else {
    const host = get('POSTGRES_HOST');
    if (host) database.host = host.value;
    const port = get('POSTGRES_PORT');
    if (port) {
      const n = Number(port.value);
      if (!/^\d+$/.test(port.value) || n < 1 || n > 65535) throw configError(envFile, port.line, `POSTGRES_PORT "${port.value}" is not a port number`);
      database.port = n;
    }
    const user = get('POSTGRES_USERNAME');
    if (user) database.user = user.value;
    const name = get('POSTGRES_DATABASE');
    if (name) database.database = name.value;
    const password = get('POSTGRES_PASSWORD');
    if (password) database.password = password.value;
  }
  const storageService = (get('ACTIVE_STORAGE_SERVICE')?.value ?? 'local').trim();
  return { dir, envFile, database, storageService };
}

export async function expandChatwoot(recipe: Recipe, env: RecipeEnv): Promise<Step[]> {
  const install = await readChatwootInstall(recipe.path!);
  const { database } = install;
  await warnIfUnresolvable(env, database.host, `Chatwoot's ${install.envFile}`);
  const postgres: Partial<PostgresStepOptions> = { database: database.database, host: database.host, port: database.port, user: database.user };
  const password = await passwordOption(env, recipe, secretKey('chatwoot', install.dir, 'db'), database.password);
  const steps: unknown[] = [{ postgres: { ...postgres, ...password } }];

  const paths: string[] = [];
  if (install.storageService === 'local') {
    const storage = path.join(install.dir, 'storage');
    if ((await pathKind(storage)) === 'dir') paths.push(storage);
    else {
      env.ctx.warn(
        `Chatwoot stores uploads locally (ACTIVE_STORAGE_SERVICE=local) but ${storage} does not exist: nothing uploaded yet, or the uploads live elsewhere (a Docker volume?) — back that up with the plan's paths`,
      );
    }
  } else {
    env.ctx.warn(
      `Chatwoot stores uploads in "${install.storageService}" (ACTIVE_STORAGE_SERVICE), not on this machine: they are not in this backup; enable backups with that storage provider`,
    );
  }
  paths.push(install.envFile);
  note(env, 'Chatwoot: code customisations are not part of this backup; keep them in git');
  const files = filesStep(paths, recipe);
  if (files) steps.push(files);
  return finishSteps('chatwoot', install.envFile, steps);
}

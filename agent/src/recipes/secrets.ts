import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { LifeboatError } from '@lifeboat/shared';

/**
 * Where a recipe keeps a database password it read from an application's own configuration, so that the
 * step it returns can name a `passwordFile` — the only way a password reaches a source (a 0600 PGPASSFILE or
 * MariaDB option file is built from it there). The password never enters the plan, a step, argv, a log line or
 * anything sent to the server.
 *
 * Lifecycle: one file per recipe instance and purpose, at a stable name, rewritten (atomically) at every
 * expansion so a password changed in the application's config is picked up by the next backup, and removed when
 * the config no longer holds one (or the plan names its own passwordFile). A stable file rather than a temp file
 * because expansion happens before the job's steps run and nothing tells the recipe when the job ends: a temp
 * file would either outlive the job anyway or vanish before a later dump reads it. The copy is no more exposed
 * than the original: the application's config holds the same secret on the same machine, usually readable by
 * the web server; this copy is readable by the agent's user only (0600 in a 0700 directory).
 */
export interface SecretStore {
  /** Stores the secret under `key` and returns the file that holds it. */
  put(key: string, secret: string): Promise<string>;
  /** Removes what `put` stored under `key`, if anything. */
  remove(key: string): Promise<void>;
}

/** The agent's state directory (AgentConfig.stateDir's default) + recipe-secrets. */
export const DEFAULT_RECIPE_SECRETS_DIR = '/var/lib/lifeboat-agent/recipe-secrets';

/** A stable, filesystem-safe key for one secret of one recipe instance: recipe name, a hash of where the app lives, purpose. */
export function secretKey(recipe: string, appPath: string, purpose: string): string {
  const hash = createHash('sha256').update(`${recipe}\0${appPath}\0${purpose}`).digest('hex').slice(0, 16);
  return `${recipe}-${purpose.replace(/[^A-Za-z0-9_.-]/g, '_')}-${hash}`;
}

export function fileSecretStore(dir: string = DEFAULT_RECIPE_SECRETS_DIR): SecretStore {
  const fileFor = (key: string) => {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(key)) throw new Error(`bad secret key ${JSON.stringify(key)}`);
    return path.join(dir, `${key}.secret`);
  };
  return {
    async put(key, secret) {
      const file = fileFor(key);
      await ensurePrivateDir(dir);
      // Unchanged: leave the file alone (no churn, no window without it).
      const current = await readFile(file, 'utf8').catch(() => null);
      if (current === secret) {
        await chmod(file, 0o600);
        return file;
      }
      const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      // O_EXCL|O_NOFOLLOW: never writes through something planted at the temp name.
      const handle = await open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
      try {
        await handle.writeFile(secret);
        await handle.sync();
      } catch (err) {
        await handle.close();
        await rm(temp, { force: true });
        throw err;
      }
      await handle.close();
      await rename(temp, file);
      return file;
    },
    async remove(key) {
      await rm(fileFor(key), { force: true });
    },
  };
}

async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const info = await lstat(dir);
    if (!info.isDirectory()) throw new LifeboatError('forbidden', `${dir} should be a directory for the agent's recipe secrets, and is not`);
    const uid = process.getuid?.();
    if (uid !== undefined && info.uid !== uid) {
      throw new LifeboatError('forbidden', `${dir} (the agent's recipe secrets) belongs to uid ${info.uid}, not to the agent (uid ${uid}); fix its owner or remove it`);
    }
    if ((info.mode & 0o077) !== 0) await chmod(dir, 0o700);
  } catch (err) {
    if (err instanceof LifeboatError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new LifeboatError(
      'forbidden',
      `cannot keep the database password read from the application's config in ${dir} (${code}); make the agent's state directory writable, or give the recipe a passwordFile`,
    );
  }
}

/**
 * For `discover`, which shows what a recipe would do without writing anything: returns the path a real store
 * would use.
 */
export function dryRunSecretStore(dir: string = DEFAULT_RECIPE_SECRETS_DIR): SecretStore {
  return {
    put: async (key) => path.join(dir, `${key}.secret`),
    remove: async () => {},
  };
}

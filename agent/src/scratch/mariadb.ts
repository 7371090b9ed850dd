import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chown, mkdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '@lifeboat/shared';
import { childEnv, connectMysql, serverVersion } from '../db/mysql-tools.js';
import { fsReason } from '../fs-errors.js';
import { freePort, makeScratchDir, systemUser, writeMarker, type ScratchMarker } from './common.js';

/**
 * A throwaway MariaDB server for restore drills and tests: a fresh data directory in a scratch directory
 * (scratch/common.ts: found and removed by cleanLeftoverScratch if its owner dies), listening on a free
 * port on 127.0.0.1 and on a socket inside the scratch directory, never on the machine's own server.
 */

export interface ScratchMariadb {
  host: '127.0.0.1';
  port: number;
  /** The server's Unix socket, where root logs in without a password. */
  socket: string;
  user: 'root';
  /** The root password for TCP connections to 127.0.0.1 (rootPassword), if one was set. */
  password?: string;
  /** SELECT VERSION(), e.g. "10.11.19-MariaDB-0+deb12u1". */
  version: string;
  dir: string;
  /** Shuts the server down and removes its directory. Idempotent; never throws. */
  stop(): Promise<void>;
}

export interface ScratchMariadbOptions {
  /** Where the scratch directory goes (default: the system temp dir). Its path must be short: a socket lives in it. */
  parentDir?: string;
  log?: Logger;
  /** Sets this password for root over TCP (127.0.0.1), e.g. to test a wrong one; the socket stays password-less. */
  rootPassword?: string;
  /** How long to wait for the server to accept connections (default 60 s). */
  startTimeoutMs?: number;
}

/** The server's system user when the agent runs as root: mariadbd refuses to run as root without --user. */
const SERVER_USER = 'mysql';
/** sun_path holds 108 bytes, NUL included. */
const SOCKET_PATH_MAX = 107;
const STOP_TIMEOUT_MS = 30_000;
const PORT_ATTEMPTS = 3;

/** Small and fast rather than durable: a scratch server holds a copy that is thrown away. */
const SERVER_OPTIONS = [
  '--skip-name-resolve',
  '--innodb-buffer-pool-size=64M',
  '--innodb-log-file-size=16M',
  '--innodb-flush-log-at-trx-commit=2',
  '--innodb-doublewrite=0',
  '--sync-binlog=0',
  '--character-set-server=utf8mb4',
  '--collation-server=utf8mb4_general_ci',
  '--max-allowed-packet=1G',
  '--skip-log-bin',
];

export async function startScratchMariadb(options: ScratchMariadbOptions = {}): Promise<ScratchMariadb> {
  const log = options.log;
  const [installDb, server] = await Promise.all([findProgram(['mariadb-install-db', 'mysql_install_db']), findProgram(['mariadbd', 'mysqld'])]);
  if (!installDb || !server) {
    throw new Error('cannot start a scratch MariaDB: mariadb-install-db and mariadbd are not installed on this agent (Debian: apt-get install mariadb-server)');
  }
  const dir = await makeScratchDir('mariadb', options.parentDir).catch((err: unknown) => {
    throw new Error(`cannot create a scratch directory for MariaDB in ${options.parentDir ?? 'the temp dir'}: ${fsReason(err)}`);
  });
  const socket = join(dir, 'mysqld.sock');
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let stopping: Promise<void> | null = null;
  let ready = false;

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child && child.exitCode === null && child.signalCode === null) {
        // SIGTERM is mariadbd's clean shutdown; SIGKILL only when it does not finish in time. A server that never
        // became ready gets SIGKILL at once: it may not heed SIGTERM while it starts, and its data is thrown away.
        child.kill(ready ? 'SIGTERM' : 'SIGKILL');
        if (!(await within(exited, STOP_TIMEOUT_MS))) {
          log?.warn('scratch MariaDB did not stop in time; killing it', { pid: child.pid });
          child.kill('SIGKILL');
          await within(exited, 5000);
        }
      }
      await rm(dir, { recursive: true, force: true }).catch((err: unknown) => {
        log?.warn('cannot remove a scratch MariaDB directory', { dir, error: err instanceof Error ? err.message : String(err) });
      });
      log?.debug('scratch MariaDB stopped', { dir });
    })();
    return stopping;
  };

  try {
    if (socket.length > SOCKET_PATH_MAX) {
      throw new Error(`the scratch directory ${dir} is too long a path for the server's Unix socket (at most ${SOCKET_PATH_MAX} bytes); use a shorter parent directory`);
    }
    const asRoot = process.getuid?.() === 0;
    const owner = asRoot ? systemUser(SERVER_USER) : null;
    if (owner) await checkReachable(dir, owner);
    const datadir = join(dir, 'data');
    await mkdir(datadir, { mode: 0o700 });
    // The server (as mysql) creates its socket and pid file in the scratch dir and writes the data dir.
    if (owner) {
      await chown(dir, owner.uid, owner.gid);
      await chown(datadir, owner.uid, owner.gid);
    }
    const userOption = owner ? [`--user=${SERVER_USER}`] : [];

    await run(installDb, [
      '--no-defaults',
      `--datadir=${datadir}`,
      ...userOption,
      // root@localhost (socket) and root@127.0.0.1 without a password: the server is reachable only from here.
      '--auth-root-authentication-method=normal',
      '--skip-test-db',
      '--skip-name-resolve',
      '--innodb-log-file-size=16M',
    ]);

    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      const errorLog = join(dir, `error-${attempt}.log`);
      const args = [
        '--no-defaults',
        `--datadir=${datadir}`,
        `--socket=${socket}`,
        `--port=${port}`,
        '--bind-address=127.0.0.1',
        '--skip-networking=0',
        `--pid-file=${join(dir, 'mysqld.pid')}`,
        `--log-error=${errorLog}`,
        ...userOption,
        ...SERVER_OPTIONS,
      ];
      const started = spawn(server, args, { stdio: 'ignore', env: childEnv() });
      child = started;
      exited = new Promise<void>((resolve) => {
        started.once('exit', () => resolve());
        started.once('error', () => resolve());
      });
      const spawnFailed = new Promise<Error>((resolve) => started.once('error', resolve));
      const marker: ScratchMarker = { kind: 'mariadb', ownerPid: process.pid, createdAt: new Date().toISOString() };
      if (started.pid !== undefined) marker.serverPid = started.pid;
      await writeMarker(dir, marker);

      const outcome = await waitForServer(socket, started, spawnFailed, options.startTimeoutMs ?? 60_000);
      if (outcome === 'ready') {
        ready = true;
        break;
      }
      const errors = await logTail(errorLog);
      if (outcome === 'exited' && /address already in use/i.test(errors) && attempt < PORT_ATTEMPTS) {
        log?.debug('scratch MariaDB port taken meanwhile; trying another', { port });
        continue;
      }
      throw new Error(`the scratch MariaDB ${outcome === 'exited' ? 'exited while starting' : 'did not accept connections in time'}${errors ? `: ${errors}` : ''}`);
    }

    const admin = await connectMysql({ host: socket, port, user: 'root' }, 'internal');
    let version: string;
    try {
      version = await serverVersion(admin, 'internal');
      if (options.rootPassword !== undefined) {
        await admin.query("ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY ?", [options.rootPassword]);
      }
    } finally {
      await admin.end().catch(() => {});
    }
    log?.info('scratch MariaDB started', { port, dir, version });
    return {
      host: '127.0.0.1',
      port,
      socket,
      user: 'root',
      ...(options.rootPassword !== undefined ? { password: options.rootPassword } : {}),
      version,
      dir,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * The server runs as the mysql user: every directory above the scratch dir must let it pass (the scratch
 * dir itself is given to it). A 0700 parent would make mariadb-install-db fail with a message that says little.
 */
async function checkReachable(dir: string, owner: { uid: number; gid: number }): Promise<void> {
  for (let parent = dirname(dir); ; parent = dirname(parent)) {
    const info = await stat(parent);
    const passes = info.uid === owner.uid ? info.mode & 0o100 : info.gid === owner.gid ? info.mode & 0o010 : info.mode & 0o001;
    if (!passes) {
      throw new Error(`the ${SERVER_USER} user cannot reach ${dir}: ${parent} is mode ${(info.mode & 0o777).toString(8)}; use a parent directory others may traverse`);
    }
    if (parent === dirname(parent)) return;
  }
}

/** Waits until root can log in over the socket; gives up when the server exits or the time is up. */
async function waitForServer(socket: string, child: ChildProcess, spawnFailed: Promise<Error>, timeoutMs: number): Promise<'ready' | 'exited' | 'timeout'> {
  let failed = false;
  void spawnFailed.then(() => (failed = true));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (failed || child.exitCode !== null || child.signalCode !== null) return 'exited';
    try {
      await access(socket, constants.F_OK);
      const connection = await connectMysql({ host: socket, port: 0, user: 'root' }, 'internal');
      await connection.end().catch(() => {});
      return 'ready';
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return 'timeout';
}

/** The last lines of the server's error log that say something went wrong. */
async function logTail(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const lines = text.split('\n').filter((l) => /\[(ERROR|Warning)\]/.test(l) && !/max_open_files|table_open_cache/.test(l));
  return lines.slice(-5).map((l) => l.replace(/^\S+ \S+ \d+ /, '')).join('; ');
}

function run(program: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { timeout: 120_000, env: childEnv(), maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve();
      // Its output ends with a long advertisement; the lines that say what failed come first.
      const lines = `${String(stderr)}\n${String(stdout)}`.split('\n').map((l) => l.trim()).filter(Boolean);
      const errors = lines.filter((l) => /\[ERROR\]|error|can't|cannot|fatal/i.test(l) && !/bug report|jira/i.test(l));
      const output = (errors.length > 0 ? errors : lines).slice(0, 5).join('; ');
      reject(new Error(`${program.split('/').pop()} failed to create the scratch data directory${output ? `: ${output}` : ''}`));
    });
  });
}

async function findProgram(names: string[]): Promise<string | null> {
  const dirs = [...new Set([...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/')), '/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin'])];
  for (const name of names) {
    for (const d of dirs) {
      const path = join(d, name);
      try {
        await access(path, constants.X_OK);
        return path;
      } catch {
        // keep looking
      }
    }
  }
  return null;
}

async function within(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

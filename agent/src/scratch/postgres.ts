import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { chown, mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { LifeboatError, redact, type Logger } from '@lifeboat/shared';
import { childEnv, TailBuffer } from '../child.js';
import { loadPg, PG_INSTALL_ROOT } from '../db/postgres-tools.js';
import { freePort, makeScratchDir, readMarker, systemUser, writeMarker } from './common.js';

/**
 * A throwaway PostgreSQL cluster for restore drills and tests: initdb in a scratch directory, the server on a
 * free port of 127.0.0.1 with its socket in that directory, removed again by stop(). The server's pid is in
 * the scratch marker, so cleanLeftoverScratch (scratch/common.ts) can stop it if this process dies first.
 */

export interface ScratchPostgresOptions {
  /** The server's major version; default the newest in /usr/lib/postgresql. */
  majorVersion?: number;
  /** Where the scratch directory goes; default the system temp dir. The server's user must be able to reach it. */
  parentDir?: string;
  log?: Logger;
  /**
   * The superuser's password. With it, TCP connections need it (scram-sha-256); without it, they are trusted.
   * The Unix socket (in the scratch directory, 0700) is always trusted.
   */
  password?: string;
}

export interface ScratchPostgres {
  host: '127.0.0.1';
  port: number;
  /** The Unix socket's directory: `pg` and libpq take it as the host. */
  socketDir: string;
  user: 'postgres';
  /** The server's version, "15.14". */
  version: string;
  dataDir: string;
  /** The scratch directory: everything of this instance is in it. */
  dir: string;
  /** The postmaster's pid. */
  pid: number;
  /** Fast shutdown (SIGINT), then the directory is removed. Safe to call more than once. */
  stop(): Promise<void>;
}

/** Servers started by this process and not yet stopped: killed at exit, whatever the caller forgot. */
const running = new Map<number, { child: ChildProcess; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const { child, dir } of running.values()) {
      // Immediate shutdown: the postmaster takes its backends with it; nothing can be awaited here.
      child.kill('SIGQUIT');
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // cleanLeftoverScratch removes it at the next start.
      }
    }
  });
}

const START_TIMEOUT_MS = 30_000;
const FAST_SHUTDOWN_MS = 15_000;
const IMMEDIATE_SHUTDOWN_MS = 5_000;
/** sun_path holds 107 bytes; the socket is <socketDir>/.s.PGSQL.<port>. */
const MAX_SOCKET_PATH = 107;

function scratchError(message: string): LifeboatError {
  return new LifeboatError('restore_failed', message);
}

/** The bin directory of a major version, or of the newest installed. */
export async function postgresServerBinDir(majorVersion?: number, root = PG_INSTALL_ROOT): Promise<{ dir: string; major: number }> {
  const installed: number[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const bin = path.posix.join(root, name, 'bin');
    const names = await readdir(bin).catch(() => [] as string[]);
    if (names.includes('postgres') && names.includes('initdb')) installed.push(Number(name));
  }
  installed.sort((a, b) => b - a);
  const major = majorVersion ?? installed[0];
  if (major === undefined || !installed.includes(major)) {
    const have = installed.length ? `installed: ${installed.join(', ')}` : 'none is installed';
    const wanted = majorVersion === undefined ? 'PostgreSQL' : `PostgreSQL ${majorVersion}`;
    throw scratchError(`no ${wanted} server programs (initdb, postgres) in ${root}/<version>/bin (${have}); install postgresql-${majorVersion ?? '<version>'}`);
  }
  return { dir: path.posix.join(root, String(major), 'bin'), major };
}

export async function startScratchPostgres(options: ScratchPostgresOptions = {}): Promise<ScratchPostgres> {
  const bin = await postgresServerBinDir(options.majorVersion);
  const log = options.log;
  // initdb and postgres refuse to run as root.
  const owner = process.getuid?.() === 0 ? serverUser() : undefined;
  const dir = await makeScratchDir('postgres', options.parentDir);
  const dataDir = path.posix.join(dir, 'data');
  const socketDir = path.posix.join(dir, 'socket');
  const logFile = path.posix.join(dir, 'postgres.log');
  let child: ChildProcess | undefined;
  let stopping: Promise<void> | undefined;

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child) {
        await stopServer(child);
        if (child.pid !== undefined) running.delete(child.pid);
      }
      await rm(dir, { recursive: true, force: true });
      log?.info('scratch PostgreSQL stopped and removed', { dir });
    })();
    return stopping;
  };

  try {
    if (`${socketDir}/.s.PGSQL.65535`.length > MAX_SOCKET_PATH) {
      throw scratchError(`the scratch directory ${dir} is too deep for a Unix socket path (at most ${MAX_SOCKET_PATH} bytes); use a shorter parentDir`);
    }
    await mkdir(socketDir, { mode: 0o700 });
    if (owner) {
      await chown(dir, owner.uid, owner.gid);
      await chown(socketDir, owner.uid, owner.gid);
    }
    await initdb(bin.dir, dir, dataDir, owner, options.password);

    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      child = await spawnServer(bin.dir, dir, dataDir, socketDir, port, logFile, owner);
      running.set(child.pid!, { child, dir });
      installExitHook();
      const marker = await readMarker(dir);
      await writeMarker(dir, { kind: 'postgres', ownerPid: process.pid, createdAt: marker?.createdAt ?? new Date().toISOString(), serverPid: child.pid! });
      const started = await waitForServer(child, socketDir, port, logFile);
      if (started.ok) {
        log?.info(`scratch PostgreSQL ${started.version} started`, { port, dir });
        return { host: '127.0.0.1', port, socketDir, user: 'postgres', version: started.version, dataDir, dir, pid: child.pid!, stop };
      }
      running.delete(child.pid!);
      // Another process took the port between freePort and the server's bind: try another.
      if (started.portTaken && attempt < 3) continue;
      throw scratchError(started.message);
    }
  } catch (err) {
    await stop().catch(() => {});
    throw err instanceof LifeboatError ? err : scratchError(`starting a scratch PostgreSQL failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function serverUser(): { uid: number; gid: number } {
  try {
    return systemUser('postgres');
  } catch {
    throw scratchError('there is no "postgres" system user to run a scratch PostgreSQL as (initdb and postgres refuse root); install the PostgreSQL server package');
  }
}

async function initdb(binDir: string, dir: string, dataDir: string, owner: { uid: number; gid: number } | undefined, password: string | undefined): Promise<void> {
  const args = [
    `--pgdata=${dataDir}`,
    '--username=postgres',
    '--encoding=UTF8',
    '--locale=C',
    '--auth-local=trust',
    `--auth-host=${password === undefined ? 'trust' : 'scram-sha-256'}`,
    // A scratch cluster need not survive a crash of this machine.
    '--no-sync',
  ];
  const pwfile = path.posix.join(dir, 'initdb.pw');
  if (password !== undefined) {
    await writeFile(pwfile, `${password}\n`, { mode: 0o600, flag: 'wx' });
    if (owner) await chown(pwfile, owner.uid, owner.gid);
    args.push(`--pwfile=${pwfile}`);
  }
  let result: Awaited<ReturnType<typeof runAs>>;
  try {
    result = await runAs(path.posix.join(binDir, 'initdb'), args, dir, owner, 120_000);
  } finally {
    await rm(pwfile, { force: true });
  }
  if (!result.ok) throw scratchError(`initdb failed: ${result.reason}`);
}

/** Runs a server program (initdb) as the server's user to its end; its stderr is kept for the error message. */
function runAs(
  program: string,
  args: string[],
  cwd: string,
  owner: { uid: number; gid: number } | undefined,
  timeoutMs: number,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  return new Promise((resolve) => {
    // stderr says what went wrong; stdout only narrates (and is the fallback when stderr is empty).
    const stderr = new TailBuffer(8 * 1024);
    const stdout = new TailBuffer(2 * 1024);
    let child: ChildProcess;
    try {
      child = spawn(program, args, {
        cwd,
        env: childEnv({ set: { LC_ALL: 'C', LC_MESSAGES: 'C' } }),
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
      });
    } catch (err) {
      return resolve({ ok: false, reason: `it could not be started (${(err as NodeJS.ErrnoException).code ?? 'error'})` });
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return;
      clearTimeout(timer);
      resolve({ ok: false, reason: `it could not be started (${err.code ?? 'error'})` });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve({ ok: true });
      const how = signal ? `killed by ${signal}` : `exit code ${code}`;
      resolve({ ok: false, reason: `${stderr.text() || stdout.text() || '(no output)'} (${how})` });
    });
  });
}

async function spawnServer(
  binDir: string,
  dir: string,
  dataDir: string,
  socketDir: string,
  port: number,
  logFile: string,
  owner: { uid: number; gid: number } | undefined,
): Promise<ChildProcess> {
  // The server's output goes to a file, not a pipe to us: it must not depend on this process reading it.
  const logHandle = await open(logFile, 'a', 0o600);
  try {
    const child = spawn(
      path.posix.join(binDir, 'postgres'),
      [
        '-D', dataDir,
        '-p', String(port),
        '-c', 'listen_addresses=127.0.0.1',
        '-c', `unix_socket_directories=${socketDir}`,
        '-c', 'logging_collector=off',
        '-c', 'max_connections=50',
      ],
      {
        cwd: dir,
        env: childEnv({ set: { LC_ALL: 'C', LC_MESSAGES: 'C' } }),
        stdio: ['ignore', logHandle.fd, logHandle.fd],
        ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
      },
    );
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err: NodeJS.ErrnoException) => reject(scratchError(`postgres could not be started: ${err.code ?? 'error'}`)));
    });
    // Not kept alive by it: stop() and the exit hook end it.
    child.unref();
    return child;
  } finally {
    await logHandle.close();
  }
}

type Started = { ok: true; version: string } | { ok: false; message: string; portTaken: boolean };

/** Until the server accepts a connection on its socket, it exits, or START_TIMEOUT_MS passes. */
async function waitForServer(child: ChildProcess, socketDir: string, port: number, logFile: string): Promise<Started> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  const pg = await loadPg();
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const tail = await logTail(logFile);
      return { ok: false, message: `postgres exited while starting: ${tail}`, portTaken: /could not bind|address already in use/i.test(tail) };
    }
    const client = new pg.Client({ host: socketDir, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 2000 });
    client.on('error', () => {});
    try {
      await client.connect();
      const { rows } = await client.query<{ version: string }>("SELECT pg_catalog.current_setting('server_version') AS version");
      return { ok: true, version: (rows[0]?.version ?? '').split(/\s/)[0] ?? '' };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await client.end().catch(() => {});
    }
  }
  await stopServer(child);
  return { ok: false, message: `postgres did not accept connections within ${START_TIMEOUT_MS / 1000} s: ${await logTail(logFile)}`, portTaken: false };
}

async function logTail(logFile: string): Promise<string> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  const lines = text.trim().split('\n').slice(-8).join('\n');
  return redact(lines) || '(the server log is empty)';
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Fast shutdown, then immediate, then SIGKILL; resolves once the postmaster has exited. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const within = (ms: number) => Promise.race([gone.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
  const steps: [NodeJS.Signals, number][] = [
    ['SIGINT', FAST_SHUTDOWN_MS],
    ['SIGQUIT', IMMEDIATE_SHUTDOWN_MS],
    ['SIGKILL', IMMEDIATE_SHUTDOWN_MS],
  ];
  for (const [signal, ms] of steps) {
    if (exited(child)) return;
    child.kill(signal);
    if (await within(ms)) return;
  }
}

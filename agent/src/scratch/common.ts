import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile, chown } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

/**
 * Throwaway database instances (restore drills, tests) live in directories named with this prefix under the
 * system temp dir, each with a marker file naming the server's pid, so a drill agent that was killed mid-drill
 * can find and remove its leftovers at the next start.
 */
export const SCRATCH_PREFIX = 'lifeboat-scratch-';
export const SCRATCH_MARKER = 'lifeboat-scratch.json';

export interface ScratchMarker {
  kind: 'postgres' | 'mariadb' | 'dir';
  /** The agent (or test) process that made it. */
  ownerPid: number;
  /** The database server's pid, once started. */
  serverPid?: number;
  createdAt: string;
}

export async function makeScratchDir(kind: ScratchMarker['kind'], parent = tmpdir()): Promise<string> {
  const dir = await mkdtemp(join(parent, `${SCRATCH_PREFIX}${kind}-`));
  await writeMarker(dir, { kind, ownerPid: process.pid, createdAt: new Date().toISOString() });
  return dir;
}

export async function writeMarker(dir: string, marker: ScratchMarker): Promise<void> {
  await writeFile(join(dir, SCRATCH_MARKER), JSON.stringify(marker), { mode: 0o600 });
}

export async function readMarker(dir: string): Promise<ScratchMarker | null> {
  try {
    return JSON.parse(await readFile(join(dir, SCRATCH_MARKER), 'utf8')) as ScratchMarker;
  } catch {
    return null;
  }
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes scratch directories whose owner process is gone, killing their database server first.
 * Returns what it removed. Directories of a live owner (another drill in progress) are left alone.
 */
export async function cleanLeftoverScratch(parent = tmpdir()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    if (!name.startsWith(SCRATCH_PREFIX)) continue;
    const dir = join(parent, name);
    const marker = await readMarker(dir);
    if (marker && processAlive(marker.ownerPid) && marker.ownerPid !== process.pid) continue;
    // The server the marker names, and any database program still working in the directory: an owner killed
    // while it set the instance up (initdb, a server whose pid was not yet recorded) leaves those unnamed.
    const pids = new Set([...(marker?.serverPid ? [marker.serverPid] : []), ...(await scratchProcessesIn(dir))]);
    for (const pid of pids) {
      // Checked again just before: a pid recorded earlier (or found a moment ago) may be another process by now.
      if (!(await isScratchProcessIn(pid, dir))) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        continue;
      }
      for (let i = 0; i < 50 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
    }
    await rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

/** The programs a scratch instance runs (scratch/postgres.ts, scratch/mariadb.ts): the only ones cleanup stops. */
const SCRATCH_PROGRAMS = new Set(['initdb', 'postgres', 'postmaster', 'pg_ctl', 'mariadbd', 'mysqld', 'mariadb-install-db', 'mysql_install_db']);

/**
 * Whether process `pid` is one of the scratch programs working in `dir` (a path of its command line is `dir` or
 * inside it, as an argument or an option's value), from /proc: a shell or viewer an operator has open on the
 * directory is not. The program is the command's first word, or the script an interpreter runs.
 */
async function isScratchProcessIn(pid: number, dir: string): Promise<boolean> {
  if (pid === process.pid) return false;
  const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
  if (!args.slice(0, 2).some((arg) => SCRATCH_PROGRAMS.has(basename(arg)))) return false;
  const inDir = (p: string) => p === dir || p.startsWith(`${dir}/`);
  return args.slice(1).some((arg) => inDir(arg) || (arg.includes('=') && inDir(arg.slice(arg.indexOf('=') + 1))));
}

/** The scratch programs working in `dir`; none where there is no /proc. */
async function scratchProcessesIn(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    const pid = Number(entry);
    if (Number.isInteger(pid) && (await isScratchProcessIn(pid, dir))) pids.push(pid);
  }
  return pids;
}

/** A TCP port free on 127.0.0.1 right now (the kernel picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** uid and gid of a system user, e.g. "postgres": initdb and postgres refuse to run as root. */
export function systemUser(name: string): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error(`no system user "${name}"`);
  return { uid, gid };
}

/** Gives a scratch directory to the user the database server runs as. */
export async function chownTree(dir: string, owner: { uid: number; gid: number }): Promise<void> {
  await chown(dir, owner.uid, owner.gid);
}

export async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
}

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LifeboatError } from '@lifeboat/shared';
import { cleanLeftoverScratch, readMarker, writeMarker, processAlive, SCRATCH_PREFIX } from './common.js';
import { startScratchPostgres, type ScratchPostgres } from './postgres.js';

const isRoot = process.getuid?.() === 0;
const started: ScratchPostgres[] = [];
let parent = '';

beforeAll(async () => {
  // Its own parent, so the leftovers test sees only its own scratch directories; reachable by "postgres".
  parent = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-pgtest-'));
  await chmod(parent, 0o755);
});
afterAll(async () => {
  await Promise.allSettled(started.map((s) => s.stop()));
  await rm(parent, { recursive: true, force: true });
});

async function start(options: Parameters<typeof startScratchPostgres>[0] = {}): Promise<ScratchPostgres> {
  const instance = await startScratchPostgres({ parentDir: parent, ...options });
  started.push(instance);
  return instance;
}


/** Pids of the processes whose parent is `pid` (the postmaster's backends and helpers). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function connect(config: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client({ connectionTimeoutMillis: 5000, ...config });
  client.on('error', () => {});
  await client.connect();
  return client;
}

function scratchDirs(): string[] {
  return readdirSync(parent).filter((n) => n.startsWith('lifeboat-scratch-'));
}

describe('startScratchPostgres', () => {
  it('starts a server on 127.0.0.1 that asks TCP clients for the password and trusts its own socket', async () => {
    const db = await start({ password: 'scratch pw:1' });
    expect(db.host).toBe('127.0.0.1');
    expect(db.user).toBe('postgres');
    expect(db.version).toMatch(/^\d+\.\d+/);
    expect(db.dataDir.startsWith(db.dir)).toBe(true);
    expect((await readMarker(db.dir))?.serverPid).toBe(db.pid);

    const tcp = await connect({ host: db.host, port: db.port, user: 'postgres', database: 'postgres', password: 'scratch pw:1' });
    const { rows } = await tcp.query<{ v: string; method: string | null }>(
      "SELECT current_setting('server_version') AS v, (SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1) AS method",
    );
    expect(rows[0]!.v.startsWith(db.version)).toBe(true);
    expect(rows[0]!.method).toBe('scram-sha-256');
    await tcp.end();

    await expect(connect({ host: db.host, port: db.port, user: 'postgres', database: 'postgres', password: 'wrong' })).rejects.toThrow(/password authentication failed/);
    const socket = await connect({ host: db.socketDir, port: db.port, user: 'postgres', database: 'postgres' });
    await socket.end();
  });

  it('trusts TCP clients when no password is given', async () => {
    const db = await start({ majorVersion: 15 });
    expect(db.version.startsWith('15.')).toBe(true);
    const tcp = await connect({ host: db.host, port: db.port, user: 'postgres', database: 'postgres' });
    await tcp.end();
  });

  it('stop() leaves no server process and no directory behind, and can be called again', async () => {
    const db = await start();
    // A client, so that the server has a backend to take down with it.
    const client = await connect({ host: db.host, port: db.port, user: 'postgres', database: 'postgres' });
    const backends = childrenOf(db.pid);
    expect(backends.length).toBeGreaterThan(0);
    await db.stop();
    await client.end().catch(() => {});
    expect(processAlive(db.pid)).toBe(false);
    expect(backends.filter(processAlive)).toEqual([]);
    expect(existsSync(db.dir)).toBe(false);
    await db.stop();
  });

  it('says which versions are installed when the one asked for is not, and leaves nothing behind', async () => {
    const before = scratchDirs();
    const err = await startScratchPostgres({ majorVersion: 99, parentDir: parent }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LifeboatError);
    expect((err as LifeboatError).message).toMatch(/no PostgreSQL 99 server programs .*installed: \d+/);
    expect(scratchDirs()).toEqual(before);
  });

  it.skipIf(!isRoot)('reports "initdb failed" with initdb\'s own words, and removes the half-made directory', async () => {
    // A parent the postgres user cannot enter: initdb cannot create the data directory.
    const closed = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-pgtest-closed-'));
    try {
      await chmod(closed, 0o700);
      const err = await startScratchPostgres({ parentDir: closed }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LifeboatError);
      expect((err as LifeboatError).message).toMatch(/^initdb failed: .*(Permission denied|could not)/s);
      expect(readdirSync(closed)).toEqual([]);
    } finally {
      await rm(closed, { recursive: true, force: true });
    }
  });

  it('is stopped and removed by cleanLeftoverScratch once the process that made it is gone', async () => {
    // A parent of its own: cleanLeftoverScratch also takes this process's other instances.
    const own = await mkdtemp(path.join(parent, 'leftovers-'));
    await chmod(own, 0o755);
    const db = await start({ parentDir: own });
    const gone = spawnSync('true').pid!;
    const marker = (await readMarker(db.dir))!;
    await writeMarker(db.dir, { ...marker, ownerPid: gone });
    const removed = await cleanLeftoverScratch(own);
    expect(removed).toEqual([db.dir]);
    expect(processAlive(db.pid)).toBe(false);
    expect(existsSync(db.dir)).toBe(false);
    await db.stop();
  });

  it('cleanLeftoverScratch also stops a database program working in a leftover its marker names no server for (killed mid-setup), and nothing else', async () => {
    const own = await mkdtemp(path.join(parent, 'leftovers-'));
    const dir = await mkdtemp(path.join(own, `${SCRATCH_PREFIX}postgres-`));
    await writeMarker(dir, { kind: 'postgres', ownerPid: spawnSync('true').pid!, createdAt: new Date().toISOString() });
    // A stand-in for initdb (a script of that name, so that its command line reads like one): the directory on its
    // command line, its pid never written down. Beside it, a program that only looks at the directory.
    const fakeInitdb = path.join(own, 'initdb');
    writeFileSync(fakeInitdb, '#!/bin/sh\nsleep 60\n', { mode: 0o755 });
    const setup = spawn(fakeInitdb, ['-D', `${dir}/data`], { stdio: 'ignore' });
    const viewer = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', `${dir}/data`], { stdio: 'ignore' });
    try {
      await Promise.all([setup, viewer].map((child) => new Promise((resolve) => child.once('spawn', resolve))));
      expect(await cleanLeftoverScratch(own)).toEqual([dir]);
      expect(processAlive(setup.pid!)).toBe(false);
      expect(processAlive(viewer.pid!)).toBe(true);
      expect(existsSync(dir)).toBe(false);
    } finally {
      setup.kill('SIGKILL');
      viewer.kill('SIGKILL');
    }
  });
});

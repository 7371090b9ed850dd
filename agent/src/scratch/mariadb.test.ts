import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { afterAll, describe, expect, it } from 'vitest';
import { readMarker, processAlive } from './common.js';
import { startScratchMariadb, type ScratchMariadb } from './mariadb.js';

const started: ScratchMariadb[] = [];
afterAll(async () => {
  await Promise.all(started.map((s) => s.stop()));
});


describe('startScratchMariadb', () => {
  it('starts a MariaDB on a free port of 127.0.0.1 with a password for root over TCP, and stops it cleanly', async () => {
    const db = await startScratchMariadb({ rootPassword: 'scratch pw#1' });
    started.push(db);
    expect(db.host).toBe('127.0.0.1');
    expect(db.port).not.toBe(3306);
    expect(db.version).toMatch(/^10\.11\./);
    expect(db.socket.startsWith(db.dir)).toBe(true);

    const marker = await readMarker(db.dir);
    expect(marker).toMatchObject({ kind: 'mariadb', ownerPid: process.pid });
    expect(marker!.serverPid).toBeGreaterThan(0);
    const serverPid = marker!.serverPid!;

    const tcp = await createConnection({ host: db.host, port: db.port, user: 'root', password: 'scratch pw#1' });
    const [rows] = await tcp.query('SELECT 1 + 1 AS two');
    expect(rows).toEqual([{ two: 2 }]);
    await tcp.query('CREATE DATABASE scratch_works');
    await tcp.end();

    await expect(createConnection({ host: db.host, port: db.port, user: 'root', password: 'wrong' })).rejects.toThrow(/Access denied/);
    // The socket in the scratch dir stays open to root without a password (for the drill's own checks).
    const socket = await createConnection({ socketPath: db.socket, user: 'root' });
    await socket.end();

    await db.stop();
    expect(processAlive(serverPid)).toBe(false);
    expect(existsSync(db.dir)).toBe(false);
    // Idempotent.
    await db.stop();
  });

  it('leaves nothing behind when it cannot start, and says why', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'lifeboat-scratch-parent-'));
    try {
      // A path too long for the server's socket: refused before anything runs.
      const deep = join(parent, 'x'.repeat(100));
      await mkdir(deep);
      await expect(startScratchMariadb({ parentDir: deep })).rejects.toThrow(/too long a path for the server's Unix socket/);
      expect(await readdir(deep)).toEqual([]);
      await expect(startScratchMariadb({ parentDir: join(parent, 'missing') })).rejects.toThrow(/^cannot create a scratch directory for MariaDB in .*missing: ENOENT/);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('stops the server it started when the start fails half-way (here: not ready in time)', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'lifeboat-scratch-parent-'));
    try {
      // The server's user must be able to reach its directory: said plainly, before anything runs.
      await expect(startScratchMariadb({ parentDir: parent })).rejects.toThrow(/^the mysql user cannot reach .*: .* is mode 700; use a parent directory others may traverse$/);
      expect(await readdir(parent)).toEqual([]);
      await chmod(parent, 0o755);

      await expect(startScratchMariadb({ parentDir: parent, startTimeoutMs: 1 })).rejects.toThrow(/^the scratch MariaDB did not accept connections in time/);
      expect(await readdir(parent)).toEqual([]);
      expect(serversUnder(parent)).toEqual([]);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});

/** Pids of processes whose command line mentions the directory. */
function serversUnder(dir: string): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir);
      } catch {
        return false;
      }
    })
    .map(Number);
}

import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startScratchPostgres, type ScratchPostgres } from '../agent/src/scratch/postgres.js';
import { describeTree } from './tree.js';
import { backupNow, startFleet, tempDir, type Fleet, type JobLike, type TestServer } from './harness.js';

const PASSWORD = 'scratch-superuser-pw';

interface SnapshotLike {
  id: string;
  artifacts: { step: number; kind: string; metadata: { kind: string; tables?: { schema?: string; name: string; rows: number }[] } }[];
}

async function query<T>(pgServer: ScratchPostgres, database: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ host: pgServer.host, port: pgServer.port, user: 'postgres', password: PASSWORD, database });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.end();
  }
}

/** Per table: row count and an order-independent checksum of its rows. */
async function tableDigest(pgServer: ScratchPostgres, database: string): Promise<Record<string, string>> {
  const tables = await query<{ t: string }>(pgServer, database, `select format('%I.%I', schemaname, tablename) as t from pg_tables where schemaname not in ('pg_catalog','information_schema') order by 1`);
  const out: Record<string, string> = {};
  for (const { t } of tables) {
    const [row] = await query<{ n: string; sum: string | null }>(pgServer, database, `select count(*) as n, md5(string_agg(md5(x::text), '' order by md5(x::text))) as sum from ${t} x`);
    out[t] = `${row!.n}:${row!.sum}`;
  }
  return out;
}

describe('database backups restore onto another agent', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let pgServer: ScratchPostgres;
  let server: TestServer;
  let fleet: Fleet;
  let passwordFile: string;

  beforeAll(async () => {
    dir = await tempDir('db');
    pgServer = await startScratchPostgres({ password: PASSWORD });
    await query(pgServer, 'postgres', 'create database shop');
    await query(pgServer, 'shop', `create table customers (id serial primary key, name text not null, note text);
      create schema "Sales"; create table "Sales"."Order Lines" (id bigserial primary key, customer int references customers, amount numeric(10,2), placed timestamptz default now());
      insert into customers (name, note) select 'customer ' || i, repeat('x', i % 50) from generate_series(1, 5000) i;
      insert into "Sales"."Order Lines" (customer, amount) select 1 + i % 5000, i / 7.0 from generate_series(1, 20000) i;`);
    passwordFile = join(dir.path, 'pg.pass');
    await writeFile(passwordFile, PASSWORD + '\n', { mode: 0o600 });
    fleet = await startFleet(dir.path, [{ name: 'db-1' }, { name: 'db-2' }]);
    server = fleet.server;
  });

  afterAll(async () => {
    await fleet?.stop();
    await pgServer?.stop();
    await dir?.cleanup();
  });

  const backup = (plan: string): Promise<JobLike> => backupNow(server, plan);

  it('backs up PostgreSQL while a writer inserts, and SQLite and files, dumps first; restores with matching counts', async () => {
    const sqlitePath = join(dir.path, 'app.sqlite');
    execFileSync('sqlite3', [sqlitePath, 'PRAGMA journal_mode=WAL; create table notes(id integer primary key, body text); insert into notes(body) select hex(randomblob(40)) from generate_series(1, 3000);']);
    const files = join(dir.path, 'uploads');
    await mkdir(files);
    await writeFile(join(files, 'a.txt'), 'attachment\n');
    const plans = { plans: [{ id: 'shop', agent: 'db-1', steps: [
      { postgres: { database: 'shop', host: '127.0.0.1', port: pgServer.port, user: 'postgres', passwordFile } },
      { sqlite: { path: sqlitePath } },
      { files: { paths: [files] } },
    ] }] };
    expect((await server.api('POST', '/v1/plans', plans)).status).toBe(200);

    // A writer keeps inserting during the dump: the recorded counts must match the dump exactly.
    let writing = true;
    const writer = (async () => {
      const client = new pg.Client({ host: pgServer.host, port: pgServer.port, user: 'postgres', password: PASSWORD, database: 'shop' });
      await client.connect();
      while (writing) await client.query(`insert into customers (name) values ('late ' || now())`);
      await client.end();
    })();
    const job = await backup('shop');
    writing = false;
    await writer;
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');

    const snapshot = (await server.api<{ snapshot: SnapshotLike }>('GET', `/v1/snapshots/${job.snapshotId}`)).body.snapshot;
    expect(snapshot.artifacts.map((a) => a.kind)).toEqual(['postgres', 'sqlite', 'files']);
    const recorded = snapshot.artifacts[0]!.metadata.tables!;
    expect(recorded.find((t) => t.name === 'Order Lines')!.rows).toBe(20000);
    const recordedCustomers = recorded.find((t) => t.name === 'customers')!.rows;
    expect(recordedCustomers).toBeGreaterThanOrEqual(5000);

    const restoreDir = join(dir.path, 'restored');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 'db-2', '--to', restoreDir, '--to-postgres', `postgres://postgres@127.0.0.1:${pgServer.port}/shop_restored`, '--password-file', passwordFile]);
    expect(res.code, res.stderr + res.stdout).toBe(0);
    expect(res.stdout).toMatch(/row counts match/);

    const restored = await tableDigest(pgServer, 'shop_restored');
    expect(Object.keys(restored).sort()).toEqual(['"Sales"."Order Lines"', 'public.customers']);
    expect(restored['public.customers']!.split(':')[0]).toBe(String(recordedCustomers));
    // The order lines never changed during the backup: their content must be identical.
    expect(restored['"Sales"."Order Lines"']).toBe((await tableDigest(pgServer, 'shop'))['"Sales"."Order Lines"']);

    const restoredSqlite = join(restoreDir, 'app.sqlite');
    expect(execFileSync('sqlite3', [restoredSqlite, 'PRAGMA integrity_check; select count(*) from notes;'], { encoding: 'utf8' }).trim().split('\n')).toEqual(['ok', '3000']);
    expect(await readFile(join(restoreDir, files.slice(1), 'a.txt'), 'utf8')).toBe('attachment\n');
  });

  it('fails with a clear error and records nothing for a wrong password, a missing database, an unreachable host', async () => {
    const wrong = join(dir.path, 'wrong.pass');
    await writeFile(wrong, 'not-the-password\n', { mode: 0o600 });
    const cases = [
      { id: 'wrong-pw', step: { database: 'shop', port: pgServer.port, passwordFile: wrong }, expect: /password/i },
      { id: 'no-db', step: { database: 'nowhere', port: pgServer.port, passwordFile }, expect: /nowhere/ },
      { id: 'no-host', step: { database: 'shop', port: 1, passwordFile }, expect: /127\.0\.0\.1:1|connect|refused/i },
    ];
    const plans = { plans: cases.map((c) => ({ id: c.id, agent: 'db-1', steps: [{ postgres: { host: '127.0.0.1', user: 'postgres', ...c.step } }] })) };
    expect((await server.api('POST', '/v1/plans', plans)).status).toBe(200);
    for (const c of cases) {
      const job = await backup(c.id);
      expect(job.status, c.id).toBe('failed');
      expect(job.error!.code).toBe('source_failed');
      expect(job.error!.message, c.id).toMatch(c.expect);
      expect(job.error!.message).not.toContain(PASSWORD);
      expect((await server.api<{ snapshots: unknown[] }>('GET', `/v1/snapshots?plan=${c.id}`)).body.snapshots).toHaveLength(0);
    }
  });

  it('backs up a Chatwoot installation by its recipe and restores it on another agent', async () => {
    const install = join(dir.path, 'chatwoot');
    await mkdir(join(install, 'storage/ab/cd'), { recursive: true });
    await query(pgServer, 'postgres', 'create database chatwoot_production');
    await query(pgServer, 'chatwoot_production', `create table conversations (id serial primary key, subject text); insert into conversations (subject) select 'conv ' || i from generate_series(1, 1234) i;`);
    await writeFile(join(install, '.env'), `RAILS_ENV=production\nPOSTGRES_HOST=127.0.0.1\nPOSTGRES_PORT=${pgServer.port}\nPOSTGRES_USERNAME=postgres\nPOSTGRES_PASSWORD=${PASSWORD}\nPOSTGRES_DATABASE=chatwoot_production\nACTIVE_STORAGE_SERVICE=local\n`, { mode: 0o600 });
    await writeFile(join(install, 'storage/ab/cd/abcdef'), 'an uploaded avatar');
    expect((await server.api('POST', '/v1/plans', { plans: [{ id: 'chatwoot', agent: 'db-1', recipe: { name: 'chatwoot', path: install } }] })).status).toBe(200);
    const job = await backup('chatwoot');
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    const snapshot = (await server.api<{ snapshot: SnapshotLike }>('GET', `/v1/snapshots/${job.snapshotId}`)).body.snapshot;
    expect(snapshot.artifacts.map((a) => a.kind)).toEqual(['postgres', 'files']);
    // The password the recipe found never reached the server.
    expect(JSON.stringify(snapshot)).not.toContain(PASSWORD);
    expect(JSON.stringify((await server.api('GET', '/v1/plans/chatwoot')).body)).not.toContain(PASSWORD);

    const restoreDir = join(dir.path, 'chatwoot-restored');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 'db-2', '--to', restoreDir, '--to-postgres', `postgres://postgres@127.0.0.1:${pgServer.port}/chatwoot_moved`, '--password-file', passwordFile]);
    expect(res.code, res.stderr + res.stdout).toBe(0);
    expect((await query<{ n: string }>(pgServer, 'chatwoot_moved', 'select count(*) as n from conversations'))[0]!.n).toBe('1234');
    expect(await describeTree(join(restoreDir, install.slice(1)))).toEqual(await describeTree(install));
  });
});

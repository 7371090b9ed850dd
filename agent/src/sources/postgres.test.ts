import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LifeboatError, type ArtifactForRestore, type PostgresStepOptions, type PostgresTarget, type TableRecord } from '@lifeboat/shared';
import { dumpToolFor, setStableOutput, tableChecksum } from '../db/postgres-tools.js';
import { freePort } from '../scratch/common.js';
import { startScratchPostgres, type ScratchPostgres } from '../scratch/postgres.js';
import { createPostgresGlobalsSource, postgresGlobalsSource } from './postgres-globals.js';
import { createPostgresSource, namePatternParts, postgresSource, type PostgresMetadata } from './postgres.js';
import { fakeJobContext, collect } from './test-context.suite.js';

/**
 * The postgres and postgres-globals sources against real PostgreSQL: a source instance whose TCP clients need
 * a password (scram-sha-256) and a target instance that trusts them, both scratch instances.
 */

// ":" and "\" must be escaped in a password file; a space and a quote must survive too.
const PASSWORD = `pa:ss\\word 'x"`;
const PASSWORD_ENV = 'LIFEBOAT_TEST_PG_PASSWORD';
const PG_BIN = '/usr/lib/postgresql/15/bin';

let source: ScratchPostgres;
let target: ScratchPostgres;
let work = '';
let passwordFile = '';

/** The tables of the "shop" database, as the metadata names them, in the metadata's order. */
const SHOP_TABLES = [
  { schema: 'public', name: 'Mixed Case' },
  { schema: 'public', name: 'orders' },
  { schema: 'public', name: 'with "quote" and space' },
  { schema: 'sales', name: 'items' },
];

async function connect(db: ScratchPostgres, database: string, password?: string): Promise<pg.Client> {
  const client = new pg.Client({ host: db.host, port: db.port, user: 'postgres', database, password: password ?? '', connectionTimeoutMillis: 5000 });
  client.on('error', () => {});
  await client.connect();
  return client;
}

async function sql(db: ScratchPostgres, database: string, text: string): Promise<pg.QueryResult> {
  const client = await connect(db, database, db === source ? PASSWORD : undefined);
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  [source, target] = await Promise.all([startScratchPostgres({ password: PASSWORD }), startScratchPostgres()]);
  work = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-pgsource-'));
  passwordFile = path.join(work, 'pg.pass');
  await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });

  await sql(source, 'postgres', 'CREATE DATABASE shop');
  await sql(source, 'postgres', 'CREATE DATABASE big');
  await sql(source, 'shop', `
    CREATE ROLE app_owner NOLOGIN;
    CREATE ROLE reporter NOLOGIN;
    CREATE SCHEMA sales AUTHORIZATION app_owner;
    CREATE TABLE public.orders (id serial PRIMARY KEY, note text, amount numeric(12,2), created timestamptz NOT NULL DEFAULT now());
    INSERT INTO public.orders (note, amount, created)
      SELECT 'order ' || g, g * 1.25, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, 5000) g;
    ALTER TABLE public.orders OWNER TO app_owner;
    GRANT SELECT ON public.orders TO reporter;
    CREATE TABLE public."Mixed Case" (id int PRIMARY KEY, "Weird Col" text);
    INSERT INTO public."Mixed Case" SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'ünïcødé ' || g END FROM generate_series(1, 300) g;
    CREATE TABLE public."with ""quote"" and space" (v text, at date);
    INSERT INTO public."with ""quote"" and space" VALUES ('it''s', '2020-02-29'), (E'tab\\there', NULL), ('', '1999-12-31');
    CREATE TABLE sales.items (id bigint PRIMARY KEY, payload jsonb, data bytea, f float8, span interval);
    INSERT INTO sales.items SELECT g, jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)), decode(md5(g::text), 'hex'), g / 7.0, g * interval '1 hour'
      FROM generate_series(1, 1000) g;
    ALTER TABLE sales.items OWNER TO app_owner;
  `);
  // Big enough that pg_dump is still writing when a test stops reading its output.
  await sql(source, 'big', "CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 40000) g");
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([source?.stop(), target?.stop()]);
  await rm(work, { recursive: true, force: true });
  delete process.env[PASSWORD_ENV];
});

function step(options: Partial<PostgresStepOptions> = {}): PostgresStepOptions {
  return { database: 'shop', host: source.host, port: source.port, user: 'postgres', passwordFile, globals: false, ...options };
}

function targetDb(database: string, options: Partial<PostgresTarget> = {}): PostgresTarget {
  return { kind: 'postgres', host: target.host, port: target.port, user: 'postgres', database, force: false, ...options };
}


interface Dump {
  bytes: Buffer;
  metadata: PostgresMetadata;
}

async function backup(options: Partial<PostgresStepOptions> = {}, src = postgresSource): Promise<Dump> {
  const t = fakeJobContext();
  const artifact = await src.backup(step(options), t.ctx);
  const bytes = await collect(artifact.stream);
  return { bytes, metadata: (await artifact.metadata) as PostgresMetadata };
}

function artifactOf(dump: Dump, metadata: PostgresMetadata = dump.metadata): ArtifactForRestore {
  return {
    artifactId: 'art_test',
    step: 0,
    kind: 'postgres',
    name: metadata.database,
    size: dump.bytes.length,
    sha256: createHash('sha256').update(dump.bytes).digest('hex'),
    metadata,
    chunks: [],
  };
}

/** The artifact in odd-sized pieces, as the download delivers it. */
function piecesOf(buffer: Buffer, size = 64 * 1024 + 7): Readable {
  const pieces: Buffer[] = [];
  for (let at = 0; at < buffer.length; at += size) pieces.push(buffer.subarray(at, at + size));
  return Readable.from(pieces);
}

async function restore(dump: Dump, to: PostgresTarget | { kind: 'dir'; path: string; force: boolean }, options: { metadata?: PostgresMetadata; src?: typeof postgresSource } = {}) {
  const t = fakeJobContext();
  const result = await (options.src ?? postgresSource).restore(piecesOf(dump.bytes), to, { preserveOwner: false, artifact: artifactOf(dump, options.metadata) }, t.ctx);
  return { ...result, warnings: t.warnings };
}

async function failure(promise: Promise<unknown>): Promise<LifeboatError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LifeboatError);
  return err as LifeboatError;
}

/** Tables, row counts and checksums of a database as it is now, computed here, not by the source. */
async function contents(db: ScratchPostgres, database: string): Promise<TableRecord[]> {
  const client = await connect(db, database, db === source ? PASSWORD : undefined);
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await setStableOutput(client);
    const { rows } = await client.query<{ schema: string; name: string }>(
      `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
        ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"`,
    );
    const out: TableRecord[] = [];
    for (const t of rows) {
      const q = `"${t.schema.replace(/"/g, '""')}"."${t.name.replace(/"/g, '""')}"`;
      const count = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${q}`);
      out.push({ ...t, rows: Number(count.rows[0]!.n), checksum: await tableChecksum(client, t) });
    }
    await client.query('COMMIT');
    return out;
  } finally {
    await client.end();
  }
}

function tempEntries(prefix: string): string[] {
  return readdirSync(os.tmpdir()).filter((n) => n.startsWith(prefix));
}

/** Pids of our child processes running `program`. */
function ourChildren(program: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (comm === program && ppid === process.pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Sessions the source opened on a server (application_name "lifeboat"), other than the asking one. */
async function lifeboatSessions(db: ScratchPostgres): Promise<number> {
  const { rows } = await sql(db, 'postgres', "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'lifeboat' AND pid <> pg_backend_pid()");
  return (rows[0] as { n: number }).n;
}

describe('postgres backup and restore', () => {
  it('backs up while a writer keeps inserting, and restores exactly the snapshot into a fresh database', async () => {
    const writer = await connect(source, 'shop', PASSWORD);
    let inserted = 0;
    let writing = true;
    const loop = (async () => {
      while (writing) {
        await writer.query("INSERT INTO public.orders (note, amount) VALUES ('during the dump', 1)");
        inserted++;
      }
    })();
    try {
      await waitFor(() => inserted >= 20, 'the writer to start');
      const beforeBackup = inserted;
      const t = fakeJobContext();
      const artifact = await postgresSource.backup(step(), t.ctx);
      // The snapshot is taken: rows inserted from now on must be neither in the dump nor in its counts.
      const atSnapshot = inserted;
      await waitFor(() => inserted >= atSnapshot + 50, 'inserts during the dump');
      const bytes = await collect(artifact.stream);
      const metadata = (await artifact.metadata) as PostgresMetadata;
      writing = false;
      await loop;

      expect(bytes.subarray(0, 5).toString()).toBe('PGDMP');
      expect(metadata).toMatchObject({ kind: 'postgres', database: 'shop', format: 'custom', extensions: [{ name: 'plpgsql', version: expect.any(String) }] });
      expect(metadata.serverVersion).toBe(source.version);
      expect(metadata.dumpVersion).toMatch(/^15\./);
      expect(metadata.tables.map(({ schema, name }) => ({ schema, name }))).toEqual(SHOP_TABLES);
      expect(metadata.roles).toEqual(expect.arrayContaining(['app_owner', 'reporter', 'postgres']));
      const orders = metadata.tables.find((t) => t.name === 'orders')!;
      expect(orders.rows).toBeGreaterThanOrEqual(5000 + beforeBackup);
      // One insert may have committed and not been counted here yet.
      expect(orders.rows).toBeLessThanOrEqual(5000 + atSnapshot + 1);
      const { rows: now } = await writer.query<{ n: number }>('SELECT count(*)::int AS n FROM public.orders');
      expect(now[0]!.n).toBeGreaterThanOrEqual(orders.rows + 49);
      for (const table of metadata.tables) expect(table.checksum).toMatch(/^[0-9a-f]{32}$/);
      expect(t.progress.some((p) => p.phase === 'dumping' && p.bytes === bytes.length)).toBe(true);
      expect(t.warnings).toEqual([]);

      const restored = await restore({ bytes, metadata }, targetDb('shop_copy'));
      const total = metadata.tables.reduce((sum, table) => sum + table.rows, 0);
      expect(restored.summary).toMatch(
        new RegExp(`^restored 4 tables, ${total} rows into shop_copy@127\\.0\\.0\\.1:${target.port}; row counts match; content checksums match \\(4 tables\\)`),
      );
      expect(restored.summary).toContain('created the database shop_copy');
      expect(restored.summary).toMatch(/created the missing roles app_owner, reporter as NOLOGIN/);
      expect(restored.skipped).toEqual([]);

      // Checked here as well, independently of the restore's own comparison.
      expect(await contents(target, 'shop_copy')).toEqual(metadata.tables);
      const { rows } = await sql(target, 'shop_copy', `
        SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'orders') AS owner,
               has_table_privilege('reporter', 'public.orders', 'SELECT') AS reporter_reads,
               (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app_owner') AS owner_logs_in`);
      expect(rows[0]).toEqual({ owner: 'app_owner', reporter_reads: true, owner_logs_in: false });
    } finally {
      writing = false;
      await loop.catch(() => {});
      await writer.end();
    }
  });

  it('restores a big artifact with pg_restore -j from a private temporary copy, and removes the copy', async () => {
    const dump = await backup();
    const parallel = createPostgresSource({ parallelRestoreMinBytes: 0, restoreJobs: 2 });
    const spoolsBefore = tempEntries('lifeboat-pgrestore-');
    const restored = await restore(dump, targetDb('shop_parallel'), { src: parallel });
    expect(restored.summary).toMatch(/^restored 4 tables, \d+ rows into shop_parallel@.*; row counts match; content checksums match/);
    expect(restored.summary).toContain('pg_restore -j 2');
    expect(tempEntries('lifeboat-pgrestore-')).toEqual(spoolsBefore);
    expect(await contents(target, 'shop_parallel')).toEqual(dump.metadata.tables);
  });

  it('refuses a database that has tables unless forced, and then replaces only the objects the dump holds', async () => {
    const dump = await backup();
    await restore(dump, targetDb('shop_busy'));
    await sql(target, 'shop_busy', "DELETE FROM public.orders WHERE id % 2 = 0; CREATE TABLE keep_me (v text); INSERT INTO keep_me VALUES ('mine')");
    const orders = dump.metadata.tables.find((t) => t.name === 'orders')!;
    const ordersNow = async () => ((await sql(target, 'shop_busy', 'SELECT count(*)::int AS n FROM public.orders')).rows[0] as { n: number }).n;
    const changed = await ordersNow();
    expect(changed).toBeLessThan(orders.rows);

    const refused = await failure(restore(dump, targetDb('shop_busy')));
    expect(refused.code).toBe('restore_refused');
    expect(refused.message).toMatch(/shop_busy@127\.0\.0\.1:\d+ is not empty .*pass --force/);
    expect(await ordersNow()).toBe(changed);

    const forced = await restore(dump, targetDb('shop_busy', { force: true }));
    expect(forced.summary).toMatch(/^restored 4 tables, \d+ rows into shop_busy@.*; row counts match/);
    expect(forced.summary).toContain('--force');
    expect((await sql(target, 'shop_busy', 'SELECT v FROM keep_me')).rows).toEqual([{ v: 'mine' }]);
    const tables = await contents(target, 'shop_busy');
    expect(tables.filter((t) => t.name !== 'keep_me')).toEqual(dump.metadata.tables);
  });

  it('a forced restore that pg_restore cannot finish changes nothing (one transaction)', async () => {
    const dump = await backup();
    await sql(target, 'postgres', 'CREATE DATABASE shop_conflict');
    // A different table of the same name: pg_restore --clean cannot take it apart as if it were the dump's.
    await sql(target, 'shop_conflict', 'CREATE TABLE public.orders (junk int); INSERT INTO public.orders VALUES (1)');
    const err = await failure(restore(dump, targetDb('shop_conflict', { force: true })));
    expect(err).toMatchObject({ code: 'restore_failed', message: expect.stringMatching(/^pg_restore failed \(exit code 1\): .*orders/s) });
    expect(err.message).not.toContain('dropped again');
    const { rows } = await sql(target, 'shop_conflict', "SELECT (SELECT count(*)::int FROM public.orders) AS n, to_regnamespace('sales') IS NULL AS no_sales");
    expect(rows[0]).toEqual({ n: 1, no_sales: true });
  });

  it('dumps only the schemas asked for and leaves excluded tables out, in the dump and in its metadata', async () => {
    const sales = await backup({ schemas: ['sales'] });
    expect(sales.metadata.tables.map((t) => `${t.schema}.${t.name}`)).toEqual(['sales.items']);
    expect(sales.metadata.extensions).toEqual([]);
    expect(sales.metadata.roles).toContain('app_owner');

    const t = fakeJobContext();
    const some = await postgresSource.backup(step({ excludeTables: ['public.orders', '"Mixed Case"', 'public.nothing_like_this'] }), t.ctx);
    const bytes = await collect(some.stream);
    const metadata = (await some.metadata) as PostgresMetadata;
    expect(metadata.tables.map((x) => x.name)).toEqual(['with "quote" and space', 'items']);
    expect(t.warnings).toEqual([expect.stringMatching(/"public\.nothing_like_this" \(excludeTables\) matches no table/)]);

    await restore({ bytes, metadata }, targetDb('shop_some'));
    expect((await contents(target, 'shop_some')).map((x) => x.name)).toEqual(['with "quote" and space', 'items']);

    const none = await failure(postgresSource.backup(step({ schemas: ['no_such_schema'] }), fakeJobContext().ctx));
    expect(none).toMatchObject({ code: 'source_failed', message: expect.stringMatching(/"no_such_schema" \(schemas\) matches no schema/) });
  });

  it('fails a restore whose tables do not match what was recorded, naming them', async () => {
    const dump = await backup();
    const tampered: PostgresMetadata = {
      ...dump.metadata,
      tables: dump.metadata.tables.map((t) =>
        t.name === 'orders' ? { ...t, rows: t.rows + 1 } : t.name === 'items' ? { ...t, checksum: '0'.repeat(32) } : t,
      ),
    };
    tampered.tables.push({ schema: 'public', name: 'vanished', rows: 3 });
    const err = await failure(restore(dump, targetDb('shop_tampered'), { metadata: tampered }));
    expect(err.code).toBe('restore_failed');
    expect(err.message).toMatch(/does not match the backup/);
    expect(err.message).toMatch(/public\.orders: \d+ rows recorded, \d+ restored/);
    expect(err.message).toContain('sales.items: the content differs from the backup (checksum)');
    expect(err.message).toContain('public.vanished: missing (3 rows recorded)');
  });

  it('drops the database it created when pg_restore fails', async () => {
    const dump = await backup();
    // A custom-format header, then garbage: pg_restore gives up on it.
    const broken = { bytes: Buffer.concat([dump.bytes.subarray(0, 5), Buffer.alloc(4096, 0x7a)]), metadata: dump.metadata };
    const err = await failure(restore(broken, targetDb('shop_broken')));
    expect(err.code).toBe('restore_failed');
    expect(err.message).toMatch(/^pg_restore failed .*: .+/s);
    expect(err.message).toContain('was dropped again');
    expect((await sql(target, 'postgres', "SELECT count(*)::int AS n FROM pg_database WHERE datname = 'shop_broken'")).rows[0]).toEqual({ n: 0 });
  });

  it('writes the dump as <database>.pgdump into a directory, never over an existing file', async () => {
    const dump = await backup();
    const dir = path.join(work, 'as-file');
    const first = await restore(dump, { kind: 'dir', path: dir, force: false });
    const file = path.join(dir, 'shop.pgdump');
    expect(first.summary).toMatch(/^wrote shop\.pgdump .* into .*as-file; restore it by hand with: createdb NEWDB && pg_restore --exit-on-error/);
    expect(first.summary).toContain('roles app_owner');
    expect(readFileSync(file).equals(dump.bytes)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const listing = spawnSync(path.join(PG_BIN, 'pg_restore'), ['--list', file], { encoding: 'utf8' });
    expect(listing.status).toBe(0);
    expect(listing.stdout).toContain('TABLE DATA sales items');

    const refused = await failure(restore(dump, { kind: 'dir', path: dir, force: false }));
    expect(refused.code).toBe('restore_refused');
    const second = await restore(dump, { kind: 'dir', path: dir, force: true });
    expect(second.summary).toMatch(/^wrote shop-2\.pgdump/);
    expect((await readdir(dir)).sort()).toEqual(['shop-2.pgdump', 'shop.pgdump']);
  });
});

describe('postgres backup failures', () => {
  it('fails before any data moves for a wrong password, a closed port, a missing database or no password', async () => {
    const passfilesBefore = tempEntries('lifeboat-pgpass-');
    process.env[PASSWORD_ENV] = 'not the password';
    const cases: [Partial<PostgresStepOptions>, RegExp][] = [
      [{ passwordFile: undefined, passwordEnv: PASSWORD_ENV }, /cannot connect to PostgreSQL database "shop" on 127\.0\.0\.1:\d+ as user "postgres": password authentication failed/],
      [{ port: await closedPort() }, /cannot connect to PostgreSQL .*: connection refused/],
      [{ database: 'no_such_db' }, /cannot connect to PostgreSQL database "no_such_db".*: database "no_such_db" does not exist/],
      [{ passwordFile: undefined }, /the server asks for a password, and none was given \(set passwordFile or passwordEnv\)/],
      [{ passwordFile: path.join(work, 'missing.pass') }, /cannot read the password file .*missing\.pass \(passwordFile\): ENOENT/],
    ];
    for (const [options, message] of cases) {
      const t = fakeJobContext();
      const err = await failure(postgresSource.backup(step(options), t.ctx));
      expect(err.code, String(message)).toBe('source_failed');
      expect(err.message).toMatch(message);
      expect(err.message).not.toContain(PASSWORD);
      expect(t.progress).toEqual([]);
    }
    expect(tempEntries('lifeboat-pgpass-')).toEqual(passfilesBefore);
    expect(ourChildren('pg_dump')).toEqual([]);
  });

  it('a dump cancelled half-way rejects its metadata, and leaves no pg_dump, session or password file behind', async () => {
    const passfilesBefore = tempEntries('lifeboat-pgpass-');
    const t = fakeJobContext();
    const artifact = await postgresSource.backup(step({ database: 'big' }), t.ctx);
    const reader = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    expect((await reader.next()).done).toBe(false);
    expect(ourChildren('pg_dump')).toHaveLength(1);
    t.abort('the test cancelled the job');
    const err = await failure(artifact.metadata);
    expect(err).toMatchObject({ code: 'cancelled', message: 'the test cancelled the job' });
    await expect(reader.next()).rejects.toThrow();
    await waitFor(() => ourChildren('pg_dump').length === 0, 'pg_dump to end');
    await waitFor(async () => (await lifeboatSessions(source)) === 0, 'the exporting session to end');
    expect(tempEntries('lifeboat-pgpass-')).toEqual(passfilesBefore);
  });

  it('a pg_dump killed half-way fails the stream and rejects the metadata with the signal', async () => {
    const t = fakeJobContext();
    const artifact = await postgresSource.backup(step({ database: 'big' }), t.ctx);
    const reader = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    expect((await reader.next()).done).toBe(false);
    const [pid] = ourChildren('pg_dump');
    process.kill(pid!, 'SIGKILL');
    let streamError: unknown = null;
    try {
      while (!(await reader.next()).done);
    } catch (e) {
      streamError = e;
    }
    expect(streamError).toBeInstanceOf(LifeboatError);
    const err = await failure(artifact.metadata);
    expect(err).toMatchObject({ code: 'source_failed', message: expect.stringMatching(/^pg_dump was killed by SIGKILL/) });
    await waitFor(async () => (await lifeboatSessions(source)) === 0, 'the exporting session to end');
  });

  it('a consumer that stops reading early fails the artifact', async () => {
    const t = fakeJobContext();
    const artifact = await postgresSource.backup(step({ database: 'big' }), t.ctx);
    const reader = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    await reader.next();
    artifact.stream.destroy();
    const err = await failure(artifact.metadata);
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(/closed before/);
    await waitFor(() => ourChildren('pg_dump').length === 0, 'pg_dump to end');
  });
});

describe('no false success', () => {
  /** A directory with a pg_dump that claims version 15.99 and does `body` instead of dumping, beside the real pg_restore. */
  async function fakePgDump(name: string, body: string): Promise<string> {
    const dir = path.join(work, `fake-${name}`);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'pg_dump'), `#!/bin/sh\nif [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 15.99"; exit 0; fi\n${body}\n`, { mode: 0o755 });
    await symlink(path.join(PG_BIN, 'pg_restore'), path.join(dir, 'pg_restore')).catch(() => {});
    return dir;
  }

  it.each([
    ['empty', 'exit 0', /^pg_dump produced no output/],
    ['not-custom', "printf 'CREATE TABLE x ();'", /not a custom-format archive \(it does not start with "PGDMP"\)/],
    ['unreadable', "printf 'PGDMP'; head -c 5000 /dev/zero", /^pg_restore --list cannot read the archive pg_dump wrote: .+/],
    ['failing', "echo 'pg_dump: error: connection lost password=hunter2' >&2; printf 'PGDMP'; exit 1", /^pg_dump failed \(exit code 1\): pg_dump: error: connection lost password=\*\*\*$/],
  ])('a pg_dump that exits with %s output is a failure', async (name, body, message) => {
    const fake = createPostgresSource({ binDirs: [await fakePgDump(name, body)] });
    const artifact = await fake.backup(step(), fakeJobContext().ctx);
    const read = await collect(artifact.stream).then(
      () => 'ended',
      (e: unknown) => e,
    );
    expect(read).toBeInstanceOf(LifeboatError);
    const err = await failure(artifact.metadata);
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(message);
    await waitFor(async () => (await lifeboatSessions(source)) === 0, 'the exporting session to end');
  });

  it('names both versions when no pg_dump is new enough for the server', async () => {
    const dir = path.join(work, 'old-pg-dump');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'pg_dump'), '#!/bin/sh\necho "pg_dump (PostgreSQL) 13.2"\n', { mode: 0o755 });
    const err = await failure(createPostgresSource({ binDirs: [dir] }).backup(step(), fakeJobContext().ctx));
    expect(err.code).toBe('source_failed');
    expect(err.message).toContain(`the server runs PostgreSQL ${source.version} and needs pg_dump 15 or newer, but found 13.2 (${dir}/pg_dump)`);
    await waitFor(async () => (await lifeboatSessions(source)) === 0, 'the session to end');
  });

  it('a user that is not a superuser restores without owners and privileges, and says so', async () => {
    await sql(target, 'postgres', 'CREATE ROLE restorer LOGIN CREATEDB');
    const dump = await backup();
    const restored = await restore(dump, targetDb('shop_by_restorer', { user: 'restorer' }));
    expect(restored.summary).toMatch(/row counts match/);
    expect(restored.summary).toContain('--no-owner --no-privileges');
    const { rows } = await sql(target, 'shop_by_restorer', "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'orders'");
    expect(rows).toEqual([{ tableowner: 'restorer' }]);
  });
});

describe('passwords', () => {
  it('reach pg_dump and pg_restore only through a private 0600 PGPASSFILE that is removed afterwards', async () => {
    const wrappers = path.join(work, 'wrappers');
    const log = path.join(work, 'calls.log');
    await rm(wrappers, { recursive: true, force: true });
    await mkdir(wrappers);
    for (const program of ['pg_dump', 'pg_restore', 'pg_dumpall']) {
      const script = [
        '#!/bin/sh',
        `{ echo "argv: ${program} $*"; env | sed 's/^/env: /'`,
        `  if [ -n "$PGPASSFILE" ]; then echo "passfile: $PGPASSFILE $(stat -c %a "$PGPASSFILE") $(stat -c %a "$(dirname "$PGPASSFILE")")"; fi; } >> '${log}'`,
        `exec '${path.join(PG_BIN, program)}' "$@"`,
      ].join('\n');
      await writeFile(path.join(wrappers, program), script + '\n', { mode: 0o755 });
    }
    process.env[PASSWORD_ENV] = PASSWORD;
    process.env.DATABASE_URL = `postgres://postgres:${encodeURIComponent(PASSWORD)}@127.0.0.1/shop`;
    try {
      const wrapped = createPostgresSource({ binDirs: [wrappers] });
      const dump = await backup({ passwordFile: undefined, passwordEnv: PASSWORD_ENV }, wrapped);
      // A restore into the instance that asks for the password, through the same wrappers.
      const t = fakeJobContext();
      const restored = await wrapped.restore(
        piecesOf(dump.bytes),
        { kind: 'postgres', host: source.host, port: source.port, user: 'postgres', database: 'shop_again', passwordEnv: PASSWORD_ENV, force: false },
        { preserveOwner: false, artifact: artifactOf(dump) },
        t.ctx,
      );
      expect(restored.summary).toMatch(/row counts match/);
      const globals = createPostgresGlobalsSource({ binDirs: [wrappers] });
      const g = await globals.backup(step({ passwordFile: undefined, passwordEnv: PASSWORD_ENV }), fakeJobContext().ctx);
      await collect(g.stream);
      await g.metadata;
    } finally {
      delete process.env.DATABASE_URL;
    }

    const calls = readFileSync(log, 'utf8');
    expect(calls).toMatch(/argv: pg_dump --format=custom --compress=0 --snapshot=\S+ --no-password --dbname=dbname='shop' host='127\.0\.0\.1'/);
    expect(calls).toMatch(/argv: pg_restore --exit-on-error --no-password --dbname=dbname='shop_again'/);
    expect(calls).toMatch(/argv: pg_dumpall --globals-only --no-password --database=shop/);
    // Every dump is read back by pg_restore --list before it counts.
    expect(calls).toContain('argv: pg_restore --list');
    expect(calls).not.toContain(PASSWORD);
    expect(calls).not.toContain(encodeURIComponent(PASSWORD));
    expect(calls).not.toContain(PASSWORD_ENV);
    expect(calls).not.toMatch(/env: PGPASSWORD=/);
    const passfiles = [...calls.matchAll(/^passfile: (\S+) (\d+) (\d+)$/gm)];
    // pg_dump, pg_restore, pg_dumpall (the --version calls get none).
    expect(passfiles).toHaveLength(3);
    for (const [, file, mode, dirMode] of passfiles) {
      expect([mode, dirMode]).toEqual(['600', '700']);
      expect(existsSync(file!)).toBe(false);
      expect(existsSync(path.dirname(file!))).toBe(false);
    }
  });
});

describe('postgres-globals', () => {
  it('dumps roles with pg_dumpall --globals-only and restores them only as a file for a person to apply', async () => {
    const t = fakeJobContext();
    const artifact = await postgresGlobalsSource.backup(step(), t.ctx);
    const bytes = await collect(artifact.stream);
    const metadata = await artifact.metadata;
    expect(metadata).toMatchObject({ kind: 'postgres-globals', serverVersion: source.version });
    expect(metadata.kind === 'postgres-globals' && metadata.roles).toEqual(expect.arrayContaining(['app_owner', 'postgres', 'reporter']));
    const text = bytes.toString('utf8');
    expect(text).toContain('CREATE ROLE app_owner;');
    expect(text).toMatch(/ALTER ROLE postgres WITH SUPERUSER .*PASSWORD 'SCRAM-SHA-256/);

    const dir = path.join(work, 'globals');
    const artifactForRestore: ArtifactForRestore = {
      artifactId: 'art_globals', step: 0, kind: 'postgres-globals', name: artifact.name, size: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'), metadata, chunks: [],
    };
    const restored = await postgresGlobalsSource.restore(piecesOf(bytes), { kind: 'dir', path: dir, force: false }, { preserveOwner: false, artifact: artifactForRestore }, fakeJobContext().ctx);
    expect(restored.summary).toMatch(/^wrote globals\.sql \(\d+ roles: .*app_owner.*\) into .*globals; it was NOT applied: .*review it, then apply it with psql -f .*globals\.sql/);
    const file = path.join(dir, 'globals.sql');
    expect(readFileSync(file).equals(bytes)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    expect(postgresGlobalsSource.targets).toEqual(['dir']);
    const refused = await failure(postgresGlobalsSource.restore(piecesOf(bytes), targetDb('globals'), { preserveOwner: false }, fakeJobContext().ctx));
    expect(refused.code).toBe('restore_refused');
  });

  it('fails before any data moves for a wrong password', async () => {
    process.env[PASSWORD_ENV] = 'wrong';
    const err = await failure(postgresGlobalsSource.backup(step({ passwordFile: undefined, passwordEnv: PASSWORD_ENV }), fakeJobContext().ctx));
    expect(err).toMatchObject({ code: 'source_failed', message: expect.stringMatching(/password authentication failed/) });
  });
});

describe('choosing pg_dump', () => {
  it('takes the closest major at least the server\'s, its newest release, and an install directory before PATH', async () => {
    const dirs: string[] = [];
    for (const [name, version] of [['v16', '16.4'], ['v15-old', '15.2'], ['v15', '15.8'], ['path-wrapper', '15.8'], ['v14', '14.11']] as const) {
      const dir = path.join(work, 'choose', name);
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'pg_dump'), `#!/bin/sh\necho "pg_dump (PostgreSQL) ${version} (Debian ${version}-1)"\n`, { mode: 0o755 });
      dirs.push(dir);
    }
    expect(await dumpToolFor('pg_dump', { version: '15.1', major: 15 }, dirs)).toEqual({ program: 'pg_dump', path: path.join(work, 'choose/v15/pg_dump'), version: '15.8', major: 15 });
    expect((await dumpToolFor('pg_dump', { version: '16.0', major: 16 }, dirs)).version).toBe('16.4');
    expect((await dumpToolFor('pg_dump', { version: '9.6.24', major: 9.6 }, dirs)).version).toBe('14.11');
    const err = await failure(dumpToolFor('pg_dump', { version: '17.2', major: 17 }, dirs));
    expect(err.message).toMatch(/^the server runs PostgreSQL 17\.2 and needs pg_dump 17 or newer, but found 16\.4 .*, 15\.8 .*, 14\.11 /);
  });
});

describe('name patterns', () => {
  it('follow pg_dump: unquoted names fold to lower case, quotes keep case and characters, * and ? are wildcards', () => {
    expect(namePatternParts('public.Orders')).toEqual(['^(public)$', '^(orders)$']);
    expect(namePatternParts('"Mixed Case"')).toEqual(['^(Mixed Case)$']);
    expect(namePatternParts('"a.b"."x""y"')).toEqual(['^(a\\.b)$', '^(x"y)$']);
    expect(namePatternParts('log_*')).toEqual(['^(log_.*)$']);
    expect(namePatternParts('t?$')).toEqual(['^(t.\\$)$']);
  });
});

/** A port nothing listens on (free a moment ago). */
function closedPort(): Promise<number> {
  return freePort();
}

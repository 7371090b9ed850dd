import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { LifeboatError, type ArtifactForRestore, type ArtifactMetadata, type MysqlStepOptions, type RestoreTarget } from '@lifeboat/shared';
import { defaultsFileContent, writeDefaultsFile } from '../db/mysql-tools.js';
import { startScratchMariadb, type ScratchMariadb } from '../scratch/mariadb.js';
import { mysqlSource } from './mysql.js';
import { fakeJobContext, collect } from './test-context.suite.js';

// Every child the source starts is recorded (and still really started): argv, environment, the process.
vi.mock('node:child_process', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:child_process')>();
  return { ...actual, spawn: vi.fn(actual.spawn) };
});

type MysqlMetadata = Extract<ArtifactMetadata, { kind: 'mysql' }>;

/** Quotes, a "#", a backslash and a space: it must survive the defaults file's quoting. */
const PASSWORD = 'pw "q\' #x\\ y';
const PASSWORD_ENV = 'LIFEBOAT_TEST_MYSQL_PASSWORD';

let db: ScratchMariadb;
let admin: Connection;
let work = '';
let passwordFile = '';
/** The awkward content, each table with its exact row count. */
const FIXED_TABLES: Record<string, number> = {};

function connect(database?: string): Promise<Connection> {
  return createConnection({ host: db.host, port: db.port, user: 'root', password: PASSWORD, charset: 'utf8mb4', ...(database ? { database } : {}) });
}

async function rows<T = RowDataPacket>(sql: string, values: unknown[] = []): Promise<T[]> {
  const [result] = await admin.query<RowDataPacket[]>(sql, values);
  return result as T[];
}

beforeAll(async () => {
  db = await startScratchMariadb({ rootPassword: PASSWORD });
  admin = await connect();
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-mysql-test-'));
  passwordFile = path.join(work, 'mysql.pass');
  await writeFile(passwordFile, PASSWORD + '\n', { mode: 0o600 });
  process.env[PASSWORD_ENV] = PASSWORD;

  // shop: created latin1 with its trigger and routine, then switched to utf8mb4 — so mariadb-dump writes
  // "ALTER DATABASE `shop`" around them, which a restore under another name must not run against shop.
  await admin.query('CREATE DATABASE shop CHARACTER SET latin1');
  await admin.query('USE shop');
  await admin.query('CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(200) CHARACTER SET utf8mb4, data VARBINARY(64)) ENGINE=InnoDB');
  await admin.query("INSERT INTO orders (payload, data) SELECT CONCAT('order ', seq, ' ),(\\\\'' 😀'), UNHEX(SHA2(seq, 256)) FROM seq_1_to_2000");
  await admin.query('CREATE TABLE audit (msg TEXT)');
  await admin.query("CREATE TRIGGER orders_audit AFTER INSERT ON audit FOR EACH ROW BEGIN INSERT INTO audit_log VALUES ('x'),('y'); END");
  await admin.query('CREATE TABLE audit_log (msg TEXT)');
  await admin.query("CREATE PROCEDURE add_audit() BEGIN INSERT INTO audit VALUES ('from a procedure; with ;; delimiters'); END");
  await admin.query('ALTER DATABASE shop CHARACTER SET utf8mb4');
  await admin.query('CREATE TABLE `we``ird` (id INT PRIMARY KEY, s VARCHAR(200) CHARACTER SET utf8mb4)');
  await admin.query('INSERT INTO `we``ird` VALUES ?', [
    [
      [1, '),('],
      [2, "\\'),(\\'"],
      [3, "it's ''quoted''"],
      [4, 'line\nbreak\r\n-- not a comment; # nor this /* nor */ this'],
      [5, 'ünïcødé 😀 表'],
      [6, ''],
      [7, null],
      [8, '(((\\\\)))'],
      [9, '`backticks`; DELIMITER ;;'],
    ],
  ]);
  await admin.query('CREATE TABLE `with space` (id INT, note VARCHAR(20))');
  await admin.query("INSERT INTO `with space` VALUES (1, 'a'), (2, 'b')");
  await admin.query('CREATE TABLE `ünïcødé 表` (id INT, v DOUBLE, d DATETIME, b BIT(5))');
  await admin.query("INSERT INTO `ünïcødé 表` VALUES (1, -1.5e-10, '2024-02-29 12:00:00', b'10101')");
  await admin.query('CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)');
  const everyByte = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  await admin.query('INSERT INTO blobs VALUES (1, ?), (2, ?), (3, ?), (4, NULL)', [everyByte, randomBytes(200_000), Buffer.alloc(0)]);
  await admin.query('CREATE TABLE empty_table (id INT)');
  await admin.query('CREATE VIEW big_orders AS SELECT id FROM orders WHERE id > 10');
  await admin.query("CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO INSERT INTO audit VALUES ('event')");
  Object.assign(FIXED_TABLES, { audit: 0, audit_log: 0, 'we`ird': 9, 'with space': 2, 'ünïcødé 表': 1, blobs: 4, empty_table: 0 });

  // alpha and beta: a several-database dump. big: a dump large enough to stop half-way.
  await admin.query('CREATE DATABASE alpha');
  await admin.query('CREATE TABLE alpha.a (id INT PRIMARY KEY, s TEXT)');
  await admin.query("INSERT INTO alpha.a VALUES (1, 'alpha one'), (2, 'alpha two')");
  await admin.query('CREATE DATABASE beta CHARACTER SET latin1');
  await admin.query('CREATE TABLE beta.b (id INT PRIMARY KEY, s TEXT)');
  await admin.query("INSERT INTO beta.b SELECT seq, CONCAT('beta ', seq) FROM seq_1_to_300");
  await admin.query('CREATE TABLE beta.nothing (id INT)');
  await admin.query('CREATE DATABASE big');
  await admin.query('CREATE TABLE big.bulk (id INT PRIMARY KEY, s VARCHAR(300))');
  await admin.query("INSERT INTO big.bulk SELECT seq, REPEAT('x', 250) FROM seq_1_to_40000");
}, 120_000);

afterAll(async () => {
  delete process.env[PASSWORD_ENV];
  await admin?.end().catch(() => {});
  await db?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function options(partial: Partial<MysqlStepOptions> & Pick<MysqlStepOptions, 'databases'>): MysqlStepOptions {
  return { host: db.host, port: db.port, user: 'root', passwordFile, ...partial };
}


async function backup(opts: MysqlStepOptions, t = fakeJobContext()): Promise<{ dump: Buffer; metadata: MysqlMetadata; warnings: string[] }> {
  const artifact = await mysqlSource.backup(opts, t.ctx);
  const dump = await collect(artifact.stream);
  const metadata = await artifact.metadata;
  if (metadata.kind !== 'mysql') throw new Error('not mysql metadata');
  return { dump, metadata, warnings: t.warnings };
}

function artifactOf(dump: Buffer, metadata: MysqlMetadata): ArtifactForRestore {
  return {
    artifactId: 'art_test',
    step: 0,
    kind: 'mysql',
    name: metadata.databases.map((d) => d.name).join(' '),
    size: dump.length,
    sha256: createHash('sha256').update(dump).digest('hex'),
    metadata,
    chunks: [],
  };
}

function mysqlTarget(database: string, force = false): RestoreTarget {
  return { kind: 'mysql', host: db.host, port: db.port, user: 'root', database, passwordEnv: PASSWORD_ENV, force };
}

/** The dump in odd-sized pieces, as a download delivers it. */
function piecesOf(dump: Buffer, size = 65_537): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < dump.length; i += size) pieces.push(dump.subarray(i, i + size));
  return Readable.from(pieces);
}

async function restore(dump: Buffer, metadata: MysqlMetadata, target: RestoreTarget, t = fakeJobContext()) {
  return mysqlSource.restore(piecesOf(dump), target, { preserveOwner: false, artifact: artifactOf(dump, metadata) }, t.ctx);
}

async function baseTables(database: string): Promise<string[]> {
  const list = await rows<{ name: string }>("SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'", [database]);
  return list.map((r) => r.name).sort();
}

async function countOf(database: string, table: string): Promise<number> {
  const [row] = await rows<{ n: number }>('SELECT COUNT(*) AS n FROM ??.??', [database, table]);
  return Number(row!.n);
}

async function checksum(database: string, table: string): Promise<string> {
  const [row] = await rows<{ Checksum: string }>('CHECKSUM TABLE ??.??', [database, table]);
  return String(row!.Checksum);
}

/** An ordered hash of the orders up to an id: the content the dump's snapshot must hold exactly. */
async function ordersHash(database: string, maxId: number): Promise<{ rows: number; sha256: string }> {
  const list = await rows<{ id: number; payload: string; data: string }>('SELECT id, payload, HEX(data) AS data FROM ??.orders WHERE id <= ? ORDER BY id', [database, maxId]);
  const hash = createHash('sha256');
  for (const r of list) hash.update(`${r.id}\t${r.payload}\t${r.data}\n`);
  return { rows: list.length, sha256: hash.digest('hex') };
}

function tablesOf(metadata: MysqlMetadata, database: string): Record<string, number> {
  return Object.fromEntries(metadata.databases.find((d) => d.name === database)!.tables.map((t) => [t.name, t.rows]));
}

/** The dump tool's spawn calls since `from`. */
function dumpSpawns(from: number): { args: string[]; env: NodeJS.ProcessEnv; child: ChildProcess }[] {
  const mocked = vi.mocked(spawn);
  return mocked.mock.calls.slice(from).flatMap((call, i) => {
    const [program, args, opts] = call as unknown as [string, string[], { env: NodeJS.ProcessEnv }];
    if (!/(mariadb-dump|mysqldump)$/.test(program)) return [];
    return [{ args, env: opts.env, child: mocked.mock.results[from + i]!.value as ChildProcess }];
  });
}

describe('mysql source: backup and restore', () => {
  let shopDump: Buffer;
  let shopMetadata: MysqlMetadata;

  it('backs up while a writer keeps inserting: the recorded counts are exactly the dump’s, and it restores with the same content', async () => {
    const writerConnection = await connect('shop');
    let writing = true;
    let inserted = 0;
    const writer = (async () => {
      while (writing) {
        await writerConnection.query('INSERT INTO orders (payload, data) VALUES (?, ?)', [`live ${inserted} '),(' ${'é'.repeat(inserted % 7)}`, randomBytes(20)]);
        inserted++;
      }
    })();
    try {
      while (inserted < 50) await new Promise((r) => setTimeout(r, 5));
      const spawnsBefore = vi.mocked(spawn).mock.calls.length;
      const insertedBeforeDump = inserted;
      const { dump, metadata } = await backup(options({ databases: ['shop'] }));
      const insertedDuringDump = inserted;
      expect(insertedDuringDump).toBeGreaterThan(insertedBeforeDump);
      shopDump = dump;
      shopMetadata = metadata;

      // The dump: sandbox line first, trailer last, no USE (a one-database dump restores under any name).
      const text = dump.toString('utf8');
      expect(text.split('\n')[0]).toBe('/*M!999999\\- enable the sandbox mode */ ');
      expect(text.trimEnd().endsWith('-- Dump completed')).toBe(true);
      expect(text).not.toMatch(/^USE /m);
      expect(text).toContain('ALTER DATABASE `shop` CHARACTER SET latin1');

      expect(metadata).toMatchObject({ kind: 'mysql', serverVersion: db.version, dumpTool: 'mariadb-dump' });
      expect(metadata.dumpVersion).toMatch(/^10\.11\./);
      expect(metadata.databases.map((d) => d.name)).toEqual(['shop']);
      const recorded = tablesOf(metadata, 'shop');
      expect(Object.keys(recorded).sort()).toEqual(await baseTables('shop'));
      for (const [table, count] of Object.entries(FIXED_TABLES)) expect(recorded[table], table).toBe(count);
      expect(recorded.orders).toBeGreaterThanOrEqual(2050);

      // The password went through the defaults file only: first argument, gone afterwards; not in argv,
      // not in the child's environment.
      const [call] = dumpSpawns(spawnsBefore);
      expect(call!.args[0]).toMatch(/^--defaults-extra-file=\//);
      expect(call!.args.join('\0')).not.toContain(PASSWORD);
      expect(call!.args.join('\0')).not.toContain('pw ');
      expect(existsSync(call!.args[0]!.slice('--defaults-extra-file='.length))).toBe(false);
      expect(call!.args).toEqual(expect.arrayContaining(['--single-transaction', '--routines', '--triggers', '--events', '--hex-blob', '--quick']));

      // The writer went on during and after the dump: the live table moved past what was recorded.
      while (inserted < insertedDuringDump + 20) await new Promise((r) => setTimeout(r, 5));
    } finally {
      writing = false;
      await writer;
      await writerConnection.end();
    }
    expect(await countOf('shop', 'orders')).toBeGreaterThan(tablesOf(shopMetadata, 'shop').orders!);

    const t = fakeJobContext();
    const result = await restore(shopDump, shopMetadata, mysqlTarget('shop_restored'), t);
    const recorded = tablesOf(shopMetadata, 'shop');
    const total = Object.values(recorded).reduce((a, b) => a + b, 0);
    expect(result.summary).toBe(`restored ${Object.keys(recorded).length} tables, ${total} rows into shop_restored@127.0.0.1:${db.port}; row counts match`);
    // What the client was fed: the dump, its ALTER DATABASE statements renamed.
    expect(t.progress.at(-1)!.phase).toBe('restoring');
    expect(t.progress.at(-1)!.bytes).toBeGreaterThan(shopDump.length);

    // Same tables, same counts as recorded, same content.
    expect(await baseTables('shop_restored')).toEqual(Object.keys(recorded).sort());
    for (const [table, count] of Object.entries(recorded)) expect(await countOf('shop_restored', table), table).toBe(count);
    for (const table of Object.keys(FIXED_TABLES)) expect(await checksum('shop_restored', table), table).toBe(await checksum('shop', table));
    // orders changed under the dump: the snapshot holds exactly the rows committed before it (one writer,
    // increasing ids), so the restored rows equal the source's rows up to the highest restored id.
    const [max] = await rows<{ m: number }>('SELECT MAX(id) AS m FROM shop_restored.orders');
    const restoredOrders = await ordersHash('shop_restored', max!.m);
    expect(restoredOrders.rows).toBe(recorded.orders);
    expect(restoredOrders).toEqual(await ordersHash('shop', max!.m));
    // Binary data byte for byte.
    const [blob] = await rows<{ b: Buffer }>('SELECT b FROM shop_restored.blobs WHERE id = 1');
    expect(blob!.b.equals(Buffer.from(Array.from({ length: 256 }, (_, i) => i)))).toBe(true);
    // Routines, triggers, events and views came along, in the restored database.
    expect(await rows("SELECT 1 FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop_restored' AND ROUTINE_NAME = 'add_audit'")).toHaveLength(1);
    expect(await rows("SELECT 1 FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop_restored'")).toHaveLength(1);
    expect(await rows("SELECT 1 FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'shop_restored'")).toHaveLength(1);
    expect(await rows("SELECT 1 FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'shop_restored'")).toHaveLength(1);
  });

  it('restores a one-database dump under another name even where the original does not exist', async () => {
    // The dump writes "ALTER DATABASE `shop`" around its routines: run as it is, it would fail here (or
    // change shop, on the server that has it).
    await admin.query('CREATE DATABASE elsewhere');
    await admin.query('RENAME TABLE shop.empty_table TO elsewhere.empty_table');
    await admin.query('CREATE DATABASE shop_moved');
    try {
      const result = await restore(shopDump, shopMetadata, mysqlTarget('renamed'));
      expect(result.summary).toMatch(/into renamed@127\.0\.0\.1:\d+; row counts match$/);
      expect(await rows("SELECT DEFAULT_CHARACTER_SET_NAME AS cs FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop'")).toEqual([{ cs: 'utf8mb4' }]);
      expect(await rows("SELECT 1 FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'renamed'")).toHaveLength(1);
    } finally {
      await admin.query('RENAME TABLE elsewhere.empty_table TO shop.empty_table');
      await admin.query('DROP DATABASE elsewhere');
      await admin.query('DROP DATABASE shop_moved');
    }
  });

  it('refuses a restore into a database that has tables unless forced, and then replaces them', async () => {
    await expect(restore(shopDump, shopMetadata, mysqlTarget('shop_restored'))).rejects.toMatchObject({
      code: 'restore_refused',
      message: expect.stringMatching(/shop_restored@127\.0\.0\.1:\d+ is not empty \(\d+ tables\); pass --force/),
    });
    await admin.query('DELETE FROM shop_restored.blobs WHERE id = 1');
    const result = await restore(shopDump, shopMetadata, mysqlTarget('shop_restored', true));
    expect(result.summary).toMatch(/row counts match$/);
    expect(await countOf('shop_restored', 'blobs')).toBe(4);
  });

  it('fails a restore whose dump was cut short, and says so', async () => {
    // Cut inside the orders INSERT: the client is stopped before it could run the piece of statement.
    const inside = shopDump.subarray(0, shopDump.indexOf('INSERT INTO `orders`') + 5000);
    await expect(restore(inside, shopMetadata, mysqlTarget('shop_cut'))).rejects.toMatchObject({
      code: 'restore_failed',
      message: expect.stringMatching(/^the dump is incomplete: the dump ends inside a (quoted string|statement that has no delimiter)$/),
    });
    // Killed wherever it was (maybe still at an earlier table): never with a piece of the orders INSERT run.
    if ((await baseTables('shop_cut')).includes('orders')) expect(await countOf('shop_cut', 'orders')).toBe(0);
    // Cut between statements: the client succeeds, the row counts tell.
    const between = shopDump.subarray(0, shopDump.indexOf('INSERT INTO `orders`'));
    await expect(restore(between, shopMetadata, mysqlTarget('shop_cut', true))).rejects.toMatchObject({
      code: 'restore_failed',
      message: expect.stringMatching(/^restored into shop_cut@127\.0\.0\.1:\d+, but the row counts do not match the backup's: `orders`: recorded \d+ rows, found 0; /),
    });
  });

  it('fails a restore the server rejects, with the client’s error', async () => {
    const broken = Buffer.from(shopDump.toString('utf8').replace('CREATE TABLE `with space`', 'CREATE TABEL `with space`'), 'utf8');
    await expect(restore(broken, shopMetadata, mysqlTarget('shop_broken'))).rejects.toMatchObject({
      code: 'restore_failed',
      message: expect.stringMatching(/^mariadb failed \(exit code 1\): ERROR 1064 \(42000\) at line \d+: You have an error in your SQL syntax/),
    });
  });

  it('writes the dump as <database>.sql into a directory target, unchanged, readable only by its owner', async () => {
    const dir = path.join(work, 'dir-restore');
    const result = await restore(shopDump, shopMetadata, { kind: 'dir', path: dir, force: false });
    const file = path.join(dir, 'shop.sql');
    expect((await readFile(file)).equals(shopDump)).toBe(true);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(result.summary).toMatch(/^wrote .*shop\.sql \(.*: 8 tables, \d+ rows, as recorded\)$/);
    await expect(restore(shopDump, shopMetadata, { kind: 'dir', path: dir, force: false })).rejects.toMatchObject({ code: 'restore_refused' });
  });

  it('dumps several databases with --databases and restores one of them by name, leaving the others alone', async () => {
    const spawnsBefore = vi.mocked(spawn).mock.calls.length;
    const { dump, metadata } = await backup(options({ databases: ['alpha', 'beta'], passwordFile: undefined, passwordEnv: PASSWORD_ENV }));
    // The variable the password came from is not handed down to mariadb-dump.
    const [call] = dumpSpawns(spawnsBefore);
    expect(call!.env[PASSWORD_ENV]).toBeUndefined();
    expect(Object.values(call!.env)).not.toContain(PASSWORD);
    expect(metadata.databases).toEqual([
      { name: 'alpha', tables: [{ name: 'a', rows: 2 }] },
      { name: 'beta', tables: [{ name: 'b', rows: 300 }, { name: 'nothing', rows: 0 }] },
    ]);
    expect(dump.toString('utf8')).toMatch(/^USE `beta`;$/m);

    // Not a name in the artifact: which database would go there is not clear.
    await expect(restore(dump, metadata, mysqlTarget('gamma'))).rejects.toMatchObject({ code: 'restore_refused', message: expect.stringMatching(/holds 2 databases \(alpha, beta\)/) });
    // Its own name, but it is not empty.
    await expect(restore(dump, metadata, mysqlTarget('alpha'))).rejects.toMatchObject({ code: 'restore_refused' });

    const beforeChecksum = await checksum('beta', 'b');
    await admin.query("INSERT INTO alpha.a VALUES (3, 'written after the backup')");
    await admin.query('DROP DATABASE beta');
    const result = await restore(dump, metadata, mysqlTarget('beta'));
    expect(result.summary).toBe(`restored 2 tables, 300 rows into beta@127.0.0.1:${db.port}; row counts match`);
    expect(result.skipped).toEqual(["the statements of the artifact's other databases (alpha) were left out"]);
    expect(await checksum('beta', 'b')).toBe(beforeChecksum);
    // Created by the dump itself, with the character set it had.
    expect(await rows("SELECT DEFAULT_CHARACTER_SET_NAME AS cs FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'beta'")).toEqual([{ cs: 'latin1' }]);
    // alpha's section was not run: its newer row is still there.
    expect(await countOf('alpha', 'a')).toBe(3);
  });

  it('backs up "all" databases but the server’s own schemas', async () => {
    const { metadata } = await backup(options({ databases: 'all', excludeTables: ['big.bulk', 'shop.orders'] }));
    const names = metadata.databases.map((d) => d.name);
    expect(names).toEqual(expect.arrayContaining(['alpha', 'beta', 'big', 'shop', 'shop_restored', 'renamed']));
    for (const system of ['mysql', 'information_schema', 'performance_schema', 'sys']) expect(names).not.toContain(system);
    // excludeTables: left out entirely.
    expect(tablesOf(metadata, 'big')).toEqual({});
    expect(tablesOf(metadata, 'shop').orders).toBeUndefined();
    expect(tablesOf(metadata, 'shop_restored').orders).toBeGreaterThan(0);
  });
});

describe('mysql source: failures', () => {
  async function failure(opts: MysqlStepOptions): Promise<LifeboatError> {
    const spawnsBefore = vi.mocked(spawn).mock.calls.length;
    const err = await mysqlSource.backup(opts, fakeJobContext().ctx).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LifeboatError);
    // Found before any data moved: the dump tool was never started.
    expect(dumpSpawns(spawnsBefore)).toEqual([]);
    return err as LifeboatError;
  }

  it('a wrong password, an unreachable server, a missing database or password file: a clear source_failed', async () => {
    const wrong = path.join(work, 'wrong.pass');
    await writeFile(wrong, 'not the password\n', { mode: 0o600 });
    const wrongPassword = await failure(options({ databases: ['shop'], passwordFile: wrong }));
    expect(wrongPassword.code).toBe('source_failed');
    expect(wrongPassword.message).toMatch(/^cannot connect to MySQL\/MariaDB as root@127\.0\.0\.1:\d+: Access denied for user 'root'@'[^']+' \(using password: YES\)$/);
    expect(wrongPassword.message).not.toContain('not the password');

    const closedPort = db.port === 1 ? 2 : 1;
    const unreachable = await failure(options({ databases: ['shop'], port: closedPort }));
    expect(unreachable).toMatchObject({ code: 'source_failed', message: `cannot connect to MySQL/MariaDB as root@127.0.0.1:${closedPort}: connection refused (is the server running and listening there?)` });

    const missing = await failure(options({ databases: ['shop', 'no_such_db'] }));
    expect(missing).toMatchObject({ code: 'source_failed', message: `database "no_such_db" does not exist on root@127.0.0.1:${db.port} (or root may not see it)` });

    const noFile = await failure(options({ databases: ['shop'], passwordFile: path.join(work, 'absent.pass') }));
    expect(noFile).toMatchObject({ code: 'source_failed', message: expect.stringMatching(/cannot read the password file .*absent\.pass: it does not exist/) });

    const noEnv = await failure(options({ databases: ['shop'], passwordFile: undefined, passwordEnv: 'LIFEBOAT_TEST_UNSET_VARIABLE' }));
    expect(noEnv.message).toBe('the environment variable LIFEBOAT_TEST_UNSET_VARIABLE (passwordEnv) is not set for the agent');
  });

  it('a dump cancelled half-way rejects, stops mariadb-dump and removes the defaults file', async () => {
    const t = fakeJobContext();
    const spawnsBefore = vi.mocked(spawn).mock.calls.length;
    const artifact = await mysqlSource.backup(options({ databases: ['big'] }), t.ctx);
    const iterator = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.done).toBe(false);
    t.abort(new LifeboatError('cancelled', 'cancelled by the test'));
    await expect(artifact.metadata).rejects.toMatchObject({ code: 'cancelled', message: 'cancelled by the test' });
    const [call] = dumpSpawns(spawnsBefore);
    expect(call!.child.exitCode !== null || call!.child.signalCode !== null).toBe(true);
    expect(existsSync(call!.args[0]!.slice('--defaults-extra-file='.length))).toBe(false);
  });

  it('a dump tool killed by a signal fails the artifact with the signal', async () => {
    const spawnsBefore = vi.mocked(spawn).mock.calls.length;
    const artifact = await mysqlSource.backup(options({ databases: ['big'] }), fakeJobContext().ctx);
    const iterator = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    await iterator.next();
    dumpSpawns(spawnsBefore)[0]!.child.kill('SIGKILL');
    // Whatever was in the pipe still arrives; then the stream ends and the metadata says why it is no artifact.
    for (let next = await iterator.next(); !next.done; next = await iterator.next());
    await expect(artifact.metadata).rejects.toMatchObject({ code: 'source_failed', message: 'mariadb-dump was killed by SIGKILL' });
  });

  it('a dump consumed only in part (the upload failed) fails, and mariadb-dump does not linger', async () => {
    const spawnsBefore = vi.mocked(spawn).mock.calls.length;
    const artifact = await mysqlSource.backup(options({ databases: ['big'] }), fakeJobContext().ctx);
    const iterator = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    await iterator.next();
    artifact.stream.destroy();
    await expect(artifact.metadata).rejects.toMatchObject({ code: 'source_failed', message: 'the mariadb-dump stream was closed before it was complete' });
    const { child } = dumpSpawns(spawnsBefore)[0]!;
    expect(child.exitCode !== null || child.signalCode !== null).toBe(true);
  });
});

describe('defaults file', () => {
  it('is 0600 in a 0700 directory, quotes what a password may hold, and is removed', async () => {
    const file = await writeDefaultsFile({ host: '127.0.0.1', port: 3307, user: 'backup', password: PASSWORD });
    try {
      expect(file.argument).toBe(`--defaults-extra-file=${file.path}`);
      expect((await stat(file.path)).mode & 0o777).toBe(0o600);
      expect((await stat(path.dirname(file.path))).mode & 0o777).toBe(0o700);
      expect(await readFile(file.path, 'utf8')).toBe('[client]\nuser="backup"\npassword="pw \\"q\' #x\\\\ y"\nhost="127.0.0.1"\nport=3307\nprotocol=TCP\n');
    } finally {
      await file.remove();
    }
    expect(existsSync(path.dirname(file.path))).toBe(false);
    expect(defaultsFileContent({ host: '/run/mysqld/mysqld.sock', port: 3306, user: 'root' })).toBe('[client]\nuser="root"\nsocket="/run/mysqld/mysqld.sock"\n');
  });
});

import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { formatBytes, LifeboatError, type ArtifactForRestore, type ArtifactMetadata } from '@lifeboat/shared';
import { compareTables, createSqliteSource } from './sqlite.js';
import type { RestoreOptions } from './source.js';
import { fakeJobContext, collect, rejection } from './test-context.suite.js';

type SqliteMetadata = Extract<ArtifactMetadata, { kind: 'sqlite' }>;

let base = '';
/** Where the source makes its private copies: must be empty after every backup, whatever happened. */
let scratchParent = '';
let source = createSqliteSource();

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-sqlite-test-'));
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});
beforeEach(() => {
  scratchParent = fs.mkdtempSync(path.join(base, 'scratch-'));
  source = createSqliteSource({ tempParent: scratchParent });
});

function sqlite(db: string, sql: string): string {
  return execFileSync('sqlite3', ['-bail', '-init', '/dev/null', db], { input: sql, encoding: 'utf8' });
}

function count(db: string, table: string): number {
  return Number(sqlite(db, `SELECT count(*) FROM "${table.replace(/"/g, '""')}";`).trim());
}

/** A WAL database with the kinds of tables the source must handle: autoincrement, an odd name, a virtual table. */
function makeDatabase(name: string, rows: number, mode: 'wal' | 'delete' = 'wal'): string {
  const dir = fs.mkdtempSync(path.join(base, 'db-'));
  const db = path.join(dir, name);
  sqlite(
    db,
    `PRAGMA journal_mode=${mode};
     CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);
     CREATE TABLE "odd ""name"" table" (v TEXT);
     CREATE TABLE empty (v TEXT);
     CREATE INDEX items_payload ON items(payload);
     CREATE VIEW item_ids AS SELECT id FROM items;
     CREATE VIRTUAL TABLE notes USING fts5(body);
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${rows})
       INSERT INTO items(payload) SELECT randomblob(300) FROM n;
     INSERT INTO "odd ""name"" table" VALUES ('a'), ('b'), ('c');
     INSERT INTO notes VALUES ('a note'), ('another note');`,
  );
  return db;
}



async function backup(db: string) {
  const t = fakeJobContext();
  const artifact = await source.backup({ path: db }, t.ctx);
  const data = await collect(artifact.stream);
  const metadata = (await artifact.metadata) as SqliteMetadata;
  return { artifact, data, metadata, ...t };
}

function forRestore(data: Buffer, metadata: SqliteMetadata): ArtifactForRestore {
  return {
    artifactId: 'art_test',
    step: 0,
    kind: 'sqlite',
    name: metadata.path,
    size: data.length,
    sha256: createHash('sha256').update(data).digest('hex'),
    metadata,
    chunks: [],
  };
}

async function restore(data: Buffer, metadata: SqliteMetadata, dir: string, force = false) {
  const t = fakeJobContext();
  const options: RestoreOptions = { preserveOwner: false, artifact: forRestore(data, metadata) };
  return source.restore(Readable.from([data]), { kind: 'dir', path: dir, force }, options, t.ctx);
}

async function expectNoCopyLeft(): Promise<void> {
  expect(await readdir(scratchParent)).toEqual([]);
}

/** Another process inserting rows as fast as it can, each insert its own transaction, until stopped. */
function startWriter(db: string): { stop: () => Promise<void> } {
  const writer: ChildProcessWithoutNullStreams = spawn('sqlite3', ['-bail', '-init', '/dev/null', db]);
  writer.stdin.write('.timeout 5000\n');
  let stopped = false;
  const feed = () => {
    if (stopped) return;
    const ok = writer.stdin.write('INSERT INTO items(payload) VALUES (randomblob(300));\n'.repeat(20));
    if (ok) setImmediate(feed);
    else writer.stdin.once('drain', feed);
  };
  feed();
  return {
    stop: () =>
      new Promise((resolve, reject) => {
        stopped = true;
        writer.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`writer exited with ${code}`))));
        writer.stdin.end();
      }),
  };
}

describe('sqlite backup', () => {
  it('copies a WAL database consistently while another process writes to it, and restores it', async () => {
    const db = makeDatabase('app.db', 20_000);
    const before = count(db, 'items');
    const writer = startWriter(db);
    let result: Awaited<ReturnType<typeof backup>>;
    try {
      await new Promise((r) => setTimeout(r, 200));
      const duringBackup = count(db, 'items');
      result = await backup(db);
      await new Promise((r) => setTimeout(r, 100));
      // The writer was never held up by the copy.
      expect(count(db, 'items')).toBeGreaterThan(duringBackup);
    } finally {
      await writer.stop();
    }
    const after = count(db, 'items');
    const { data, metadata, warnings } = result;
    expect(warnings).toEqual([]);
    expect(metadata).toMatchObject({ kind: 'sqlite', path: db, sizeBytes: data.length, integrity: 'ok' });
    expect(data.subarray(0, 16).toString('latin1')).toBe('SQLite format 3\0');
    // SQLite's own tables and the virtual table are not listed; its shadow tables are.
    const names = metadata.tables.map((t) => t.name);
    expect(names).toEqual(expect.arrayContaining(['items', 'odd "name" table', 'empty', 'notes_content', 'notes_data']));
    expect(names).not.toContain('notes');
    expect(names).not.toContain('sqlite_sequence');
    const items = metadata.tables.find((t) => t.name === 'items')!.rows;
    expect(items).toBeGreaterThan(before);
    expect(items).toBeLessThan(after);
    expect(metadata.tables.find((t) => t.name === 'odd "name" table')!.rows).toBe(3);
    expect(metadata.tables.find((t) => t.name === 'empty')!.rows).toBe(0);
    await expectNoCopyLeft();

    const target = path.join(base, 'restored-wal');
    const restored = await restore(data, metadata, target);
    expect(restored.summary).toBe(
      `restored sqlite database app.db (${formatBytes(data.length)}) into ${target}: integrity ok, ${metadata.tables.length} tables, row counts equal those recorded at backup (${metadata.tables.reduce((s, t) => s + t.rows, 0)} rows)`,
    );
    // Only the database: no temporary file, no -wal or -shm left from checking it.
    expect(fs.readdirSync(target)).toEqual(['app.db']);
    const file = path.join(target, 'app.db');
    expect(sqlite(file, 'PRAGMA integrity_check;').trim()).toBe('ok');
    for (const table of metadata.tables) expect(count(file, table.name)).toBe(table.rows);
    expect(sqlite(file, 'PRAGMA journal_mode;').trim()).toBe('wal');
  });

  it('waits for a writer holding its lock (busy timeout) instead of failing', async () => {
    const db = makeDatabase('busy.db', 100, 'delete');
    const writer = spawn('sqlite3', ['-bail', '-init', '/dev/null', db]);
    const locked = new Promise<void>((resolve) => writer.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve()));
    writer.stdin.write("BEGIN EXCLUSIVE; INSERT INTO items(payload) VALUES (x'00'); SELECT 'locked';\n");
    await locked;
    setTimeout(() => writer.stdin.end('COMMIT;\n'), 1000);
    const startedAt = Date.now();
    const { metadata } = await backup(db);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(900);
    // The copy was made after the writer committed.
    expect(metadata.tables.find((t) => t.name === 'items')!.rows).toBe(101);
    await expectNoCopyLeft();
  });

  it('fails clearly when a writer holds its lock past the busy timeout', async () => {
    const db = makeDatabase('locked.db', 10, 'delete');
    const writer = spawn('sqlite3', ['-bail', '-init', '/dev/null', db]);
    try {
      const locked = new Promise<void>((resolve) => writer.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve()));
      writer.stdin.write("BEGIN EXCLUSIVE; INSERT INTO items(payload) VALUES (x'00'); SELECT 'locked';\n");
      await locked;
      source = createSqliteSource({ tempParent: scratchParent, busyTimeoutMs: 200 });
      const err = await rejection(source.backup({ path: db }, fakeJobContext().ctx));
      expect(err.code).toBe('source_failed');
      expect(err.message).toMatch(new RegExp(`^cannot copy sqlite database ${db}: sqlite3 failed \\(exit code \\d+\\): .*database is locked.*a writer held its lock for longer than 0.2s`, 's'));
      await expectNoCopyLeft();
    } finally {
      writer.stdin.end('ROLLBACK;\n');
    }
  });

  it('copies a database whose path has spaces, quotes and a leading dash in a name', async () => {
    const dir = path.join(base, `it's a "dir"`, '-dashed');
    fs.mkdirSync(dir, { recursive: true });
    const db = path.join(dir, `-odd 'name'.db`);
    sqlite(db, 'CREATE TABLE t (v); INSERT INTO t VALUES (1), (2);');
    const { metadata, data } = await backup(db);
    expect(metadata.tables).toEqual([{ name: 't', rows: 2 }]);
    const target = path.join(base, 'restored-odd');
    await restore(data, metadata, target);
    expect(fs.readdirSync(target)).toEqual([`-odd 'name'.db`]);
  });

  it('refuses a missing file before anything is copied (path_not_found)', async () => {
    const err = await rejection(source.backup({ path: path.join(base, 'nope', 'missing.db') }, fakeJobContext().ctx));
    expect(err.code).toBe('path_not_found');
    expect(err.message).toBe(`sqlite database ${path.join(base, 'nope', 'missing.db')} does not exist on this agent (plan step sqlite.path)`);
    await expectNoCopyLeft();
  });

  it('refuses a file that is not a SQLite database', async () => {
    const garbage = path.join(base, 'garbage.db');
    fs.writeFileSync(garbage, Buffer.alloc(8192, 0x5a));
    const err = await rejection(source.backup({ path: garbage }, fakeJobContext().ctx));
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(/is not a SQLite database: it does not start with the SQLite header/);
    await expectNoCopyLeft();
  });

  it('fails a damaged database on the integrity check of its copy, leaving no copy behind', async () => {
    const db = makeDatabase('damaged.db', 2000, 'delete');
    // Garbage over a few table pages, the header and the schema page left intact.
    const fd = fs.openSync(db, 'r+');
    fs.writeSync(fd, Buffer.alloc(3 * 4096, 0xa5), 0, 3 * 4096, 5 * 4096);
    fs.closeSync(fd);
    const err = await rejection(source.backup({ path: db }, fakeJobContext().ctx));
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(new RegExp(`^the copy of ${db} fails SQLite's integrity check: \\*\\*\\* in database main \\*\\*\\*\\nPage \\d+: `));
    await expectNoCopyLeft();
  });

  it('removes the copy when the job is aborted mid-stream', async () => {
    const db = makeDatabase('abort.db', 20_000);
    const t = fakeJobContext();
    const artifact = await source.backup({ path: db }, t.ctx);
    expect(await readdir(scratchParent)).toHaveLength(1);
    const iterator = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    await iterator.next();
    t.abort(new LifeboatError('cancelled', 'cancelled by test'));
    const err = await rejection(artifact.metadata);
    expect(err.code).toBe('cancelled');
    await expect(iterator.next()).rejects.toThrow('cancelled by test');
    await expectNoCopyLeft();
  });

  it('fails and removes the copy when the consumer closes the stream early', async () => {
    const db = makeDatabase('closed.db', 20_000);
    const artifact = await source.backup({ path: db }, fakeJobContext().ctx);
    const iterator = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    await iterator.next();
    artifact.stream.destroy();
    const err = await rejection(artifact.metadata);
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(/was closed before it was read to the end/);
    await expectNoCopyLeft();
  });

  it('says so when the sqlite3 program is missing', async () => {
    const db = makeDatabase('no-cli.db', 10);
    source = createSqliteSource({ tempParent: scratchParent, sqlite3: '/opt/nowhere/sqlite3' });
    const err = await rejection(source.backup({ path: db }, fakeJobContext().ctx));
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(new RegExp(`^cannot copy sqlite database ${db}: sqlite3 could not be started: program "sqlite3" was not found`));
    await expectNoCopyLeft();
  });

  it('stops before starting when the job is already cancelled', async () => {
    const db = makeDatabase('cancelled.db', 10);
    const t = fakeJobContext();
    t.abort('the job timed out');
    const err = await rejection(source.backup({ path: db }, t.ctx));
    expect(err.code).toBe('cancelled');
    await expectNoCopyLeft();
  });
});

describe('sqlite restore', () => {
  let data: Buffer = Buffer.alloc(0);
  let metadata: SqliteMetadata;
  beforeAll(async () => {
    scratchParent = fs.mkdtempSync(path.join(base, 'scratch-'));
    source = createSqliteSource({ tempParent: scratchParent });
    ({ data, metadata } = await backup(makeDatabase('shop.db', 50)));
  });

  it('fails when the restored row counts differ from those recorded, and leaves no file', async () => {
    const tampered: SqliteMetadata = { ...metadata, tables: metadata.tables.map((t) => (t.name === 'items' ? { ...t, rows: 51 } : t)).concat([{ name: 'gone', rows: 1 }]) };
    const target = path.join(base, 'restored-mismatch');
    const err = await rejection(restore(data, tampered, target));
    expect(err.code).toBe('restore_failed');
    expect(err.message).toBe('the restored database shop.db does not match the backup: table "items" has 50 rows, 51 were recorded; table "gone" is missing');
    expect(fs.readdirSync(target)).toEqual([]);
  });

  it('fails on a restored file that is not the size recorded', async () => {
    const target = path.join(base, 'restored-short');
    const t = fakeJobContext();
    const artifact = forRestore(data, metadata);
    const err = await rejection(source.restore(Readable.from([data.subarray(0, 4096)]), { kind: 'dir', path: target, force: false }, { preserveOwner: false, artifact }, t.ctx));
    expect(err.code).toBe('restore_failed');
    expect(err.message).toBe(`received 4096 bytes for shop.db, but the artifact holds ${data.length}`);
    expect(fs.readdirSync(target)).toEqual([]);
  });

  it('refuses a target that is not empty unless forced, and an old -wal beside the file even then', async () => {
    const target = path.join(base, 'restored-nonempty');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'shop.db-wal'), 'old');
    const refused = await rejection(restore(data, metadata, target));
    expect(refused.code).toBe('restore_refused');
    expect(refused.message).toMatch(/is not empty; pass --force/);
    const stale = await rejection(restore(data, metadata, target, true));
    expect(stale.code).toBe('restore_refused');
    expect(stale.message).toBe(`${path.join(target, 'shop.db-wal')} exists beside the file being restored and would be mixed into it; move it away first`);
    fs.rmSync(path.join(target, 'shop.db-wal'));
    fs.writeFileSync(path.join(target, 'shop.db'), 'an older file');
    await restore(data, metadata, target, true);
    expect(fs.readFileSync(path.join(target, 'shop.db')).equals(data)).toBe(true);
  });

  it('fails on a corrupt artifact (integrity check of the restored file)', async () => {
    const corrupt = Buffer.from(data);
    corrupt.fill(0xa5, 2 * 4096, 4 * 4096);
    const target = path.join(base, 'restored-corrupt');
    const err = await rejection(restore(corrupt, metadata, target));
    expect(err.code).toBe('restore_failed');
    expect(err.message).toMatch(/^(the restored database shop\.db fails SQLite's integrity check|checking the restored database shop\.db failed: .*malformed)/);
    expect(fs.readdirSync(target)).toEqual([]);
  });

  it('compares table lists both ways', () => {
    expect(compareTables([{ name: 'a', rows: 1 }], [{ name: 'a', rows: 1 }])).toEqual([]);
    expect(compareTables([{ name: 'a', rows: 1 }], [{ name: 'a', rows: 1 }, { name: 'b', rows: 0 }])).toEqual(['table "b" was not in the backup']);
  });
});

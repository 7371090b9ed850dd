import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ChunkUse } from '@lifeboat/shared';
import { Catalog, type NewSnapshot } from './catalog.js';
import { openCatalogDb } from './db.js';

let dir: string;
const open: Catalog[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lifeboat-chunk-lists-'));
});
afterEach(() => {
  for (const c of open.splice(0)) c.close();
  rmSync(dir, { recursive: true, force: true });
});

function catalogAt(file: string): Catalog {
  const catalog = new Catalog(openCatalogDb(file));
  open.push(catalog);
  return catalog;
}

const chunkId = (n: number) => createHash('sha256').update(`chunk ${n}`).digest('hex');

function snapshot(id: string, chunks: ChunkUse[]): NewSnapshot {
  const size = chunks.reduce((n, c) => n + (c.length ?? c.size), 0);
  return {
    id,
    planId: 'web',
    agentId: 'agt_1',
    jobId: `job_${id}`,
    createdAt: 1,
    startedAt: 1,
    artifacts: [{ id: `art_${id}`, step: 0, kind: 'files', name: 'site', size, sha256: '0'.repeat(64), metadata: {}, chunks }],
  };
}

/** The catalog file's size in bytes as its connection sees it (the WAL's pages included). */
function catalogBytes(file: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return (db.pragma('page_count', { simple: true }) as number) * (db.pragma('page_size', { simple: true }) as number);
  } finally {
    db.close();
  }
}

/** A catalog as an older version left it: the migrations before `tag` only. */
function catalogBefore(file: string, tag: string): Database.Database {
  const migrations = join(dir, 'migrations');
  cpSync(fileURLToPath(new URL('../../drizzle', import.meta.url)), migrations, { recursive: true });
  const journalFile = join(migrations, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalFile, 'utf8')) as { entries: { tag: string }[] };
  journal.entries = journal.entries.filter((e) => e.tag < tag);
  writeFileSync(journalFile, JSON.stringify(journal));
  const old = new Database(file);
  old.pragma('journal_mode = WAL');
  migrate(drizzle(old), { migrationsFolder: migrations });
  return old;
}

describe('chunk lists in the catalog', () => {
  it('cost about 35 bytes per chunk per snapshot, not the 260 they took with the id in every row', () => {
    const file = join(dir, 'catalog.db');
    const catalog = catalogAt(file);
    const list = Array.from({ length: 5000 }, (_, i) => ({ id: chunkId(i), size: 1_048_576 }));
    catalog.importSnapshot(snapshot('snap_first', list));
    const before = catalogBytes(file);
    // An unchanged re-backup lists the same chunks again: what it costs is the list alone.
    catalog.importSnapshot(snapshot('snap_again', list));
    const perChunk = (catalogBytes(file) - before) / list.length;
    expect(perChunk).toBeLessThan(60);
    expect(catalog.chunksOf('art_snap_again')).toEqual(list);
  });

  it('cost about 260 bytes per new chunk with ids kept as bytes, not the 436 they took as hex', () => {
    const file = join(dir, 'catalog.db');
    const catalog = catalogAt(file);
    const pack = (n: number) => createHash('md5').update(`pack ${n}`).digest('hex');
    const list = Array.from({ length: 4000 }, (_, i) => ({ id: chunkId(i), size: 1_048_576 }));
    catalog.importSnapshot(snapshot('snap_warm', [{ id: chunkId(-1), size: 1 }]));
    const before = catalogBytes(file);
    // What a backup of new data adds: its packs' chunk rows, a number for each chunk, and the snapshot's list.
    for (let p = 0; p < list.length / 100; p++) {
      catalog.recordPack({ format: 1, pack: pack(p), size: 100 * 1000, chunks: list.slice(p * 100, (p + 1) * 100).map((c, i) => [c.id, i * 1000, 1000, c.size]) }, 1);
    }
    catalog.importSnapshot(snapshot('snap_new', list));
    const perChunk = (catalogBytes(file) - before) / list.length;
    expect(perChunk).toBeLessThan(300);
    expect(catalog.chunkLocation(list[150]!.id)).toEqual({ pack: pack(1), offset: 50_000, length: 1000 });
    expect(catalog.chunkRow(list[150]!.id)).toMatchObject({ id: list[150]!.id, packId: pack(1) });
    expect(catalog.hasPack(pack(39))).toBe(true);
    expect(catalog.chunksInPackMarked(pack(2)).map((c) => [c.id, c.referenced])).toEqual(list.slice(200, 300).map((c) => [c.id, true]));
    // Stored as 32 and 16 bytes; an id that is not lowercase hex is refused rather than stored as something else.
    expect(catalog.db.$client.prepare('SELECT typeof(id), length(id), length(pack_id) FROM chunks LIMIT 1').raw().get()).toEqual(['blob', 32, 16]);
    expect(() => catalog.chunkLocation(list[0]!.id.toUpperCase())).toThrow(/not a chunk or pack id/);
  });

  it('keeps slices and repeated chunks in order, and a deleted snapshot takes only the numbers no other list uses', () => {
    const catalog = catalogAt(join(dir, 'catalog.db'));
    const [a, b, c] = [chunkId(1), chunkId(2), chunkId(3)];
    const first: ChunkUse[] = [{ id: a, size: 100 }, { id: b, size: 200, offset: 0, length: 50 }, { id: c, size: 300 }, { id: b, size: 200, offset: 120, length: 80 }];
    const second: ChunkUse[] = [{ id: c, size: 300 }, { id: b, size: 200, offset: 50, length: 70 }];
    catalog.importSnapshot(snapshot('snap_1', first));
    catalog.importSnapshot(snapshot('snap_2', second));
    expect(catalog.chunksOf('art_snap_1')).toEqual(first);
    expect(catalog.chunksOf('art_snap_2')).toEqual(second);

    catalog.deleteSnapshot('snap_1', 2);
    expect(catalog.chunksOf('art_snap_1')).toEqual([]);
    expect(catalog.chunksOf('art_snap_2')).toEqual(second);
    expect(catalog.referencedChunksPage({ afterId: '', limit: 10 }).map((r) => r.id)).toEqual([b, c].sort());
    expect(catalog.snapshotsReferencing([a, b])).toEqual(new Map([[b, ['snap_2']]]));
    const numbered = catalog.db.$client.prepare('SELECT lower(hex(id)) FROM chunk_numbers ORDER BY id').pluck().all();
    expect(numbered).toEqual([b, c].sort());

    // A chunk that comes back after its number went gets a new one, and the lists stay right.
    catalog.importSnapshot(snapshot('snap_3', [{ id: a, size: 100 }, { id: c, size: 300 }]));
    expect(catalog.chunksOf('art_snap_3')).toEqual([{ id: a, size: 100 }, { id: c, size: 300 }]);
    expect(catalog.chunksOf('art_snap_2')).toEqual(second);
  });

  it('are carried over from a catalog written before chunk numbers (migration 0005)', () => {
    const file = join(dir, 'old.db');
    const old = catalogBefore(file, '0005');
    const [a, b] = [chunkId(1), chunkId(2)];
    const insertSnapshot = old.prepare("INSERT INTO snapshots (id, plan_id, agent_id, job_id, status, created_at, started_at, size) VALUES (?, 'web', 'agt_1', ?, 'complete', 1, 1, 0)");
    const insertArtifact = old.prepare("INSERT INTO artifacts (id, snapshot_id, step, kind, name, size, sha256, chunk_count, metadata) VALUES (?, ?, 0, 'files', 'site', 0, '', 2, '{}')");
    const insertChunk = old.prepare('INSERT INTO artifact_chunks (artifact_id, seq, chunk_id, size, slice_offset, slice_length) VALUES (?, ?, ?, ?, ?, ?)');
    for (const s of ['snap_old1', 'snap_old2']) {
      insertSnapshot.run(s, `job_${s}`);
      insertArtifact.run(`art_${s}`, s);
    }
    insertChunk.run('art_snap_old1', 0, a, 100, null, null);
    insertChunk.run('art_snap_old1', 1, b, 200, 10, 20);
    insertChunk.run('art_snap_old2', 0, b, 200, null, null);
    old.close();

    const catalog = catalogAt(file);
    expect(catalog.chunksOf('art_snap_old1')).toEqual([{ id: a, size: 100 }, { id: b, size: 200, offset: 10, length: 20 }]);
    expect(catalog.chunksOf('art_snap_old2')).toEqual([{ id: b, size: 200 }]);
    // A snapshot recorded after the upgrade gets a list number of its own.
    catalog.importSnapshot(snapshot('snap_new', [{ id: a, size: 100 }]));
    expect(catalog.chunksOf('art_snap_new')).toEqual([{ id: a, size: 100 }]);
    catalog.deleteSnapshot('snap_old1', 2);
    expect(catalog.chunksOf('art_snap_old2')).toEqual([{ id: b, size: 200 }]);
    expect(catalog.referencedChunksPage({ afterId: '', limit: 10 }).map((r) => r.id)).toEqual([a, b].sort());
  });

  it('carry hex ids written before they were kept as bytes (migration 0006)', () => {
    const file = join(dir, 'old.db');
    const old = catalogBefore(file, '0006');
    const [a, b] = [chunkId(1), chunkId(2)];
    const pack = 'ab'.repeat(16);
    old.prepare("INSERT INTO packs (id, size, chunk_count, created_at) VALUES (?, 300, 2, 1)").run(pack);
    const insertChunk = old.prepare('INSERT INTO chunks (id, pack_id, pack_offset, stored_size, plain_size, created_at, last_used_at) VALUES (?, ?, ?, ?, ?, 1, 1)');
    insertChunk.run(a, pack, 0, 100, 100);
    insertChunk.run(b, pack, 100, 200, 200);
    old.prepare("INSERT INTO snapshots (id, plan_id, agent_id, job_id, status, created_at, started_at, size) VALUES ('snap_old', 'web', 'agt_1', 'job_old', 'complete', 1, 1, 0)").run();
    old.prepare("INSERT INTO artifacts (id, snapshot_id, step, kind, name, size, sha256, chunk_count, metadata, chunk_list) VALUES ('art_snap_old', 'snap_old', 0, 'files', 'site', 0, '', 2, '{}', 1)").run();
    const insertNumber = old.prepare('INSERT INTO chunk_numbers (num, id) VALUES (?, ?)');
    insertNumber.run(1, b);
    insertNumber.run(2, a);
    const insertUse = old.prepare('INSERT INTO artifact_chunks (list, seq, chunk, size) VALUES (1, ?, ?, ?)');
    insertUse.run(0, 2, 100);
    insertUse.run(1, 1, 200);
    old.close();

    const catalog = catalogAt(file);
    expect(catalog.chunksOf('art_snap_old')).toEqual([{ id: a, size: 100 }, { id: b, size: 200 }]);
    expect(catalog.chunkLocation(b)).toEqual({ pack, offset: 100, length: 200 });
    expect(catalog.listPacks().map((p) => p.id)).toEqual([pack]);
    expect(catalog.referencedChunksPage({ afterId: '', limit: 10 }).map((r) => r.id)).toEqual([a, b].sort());
    const kinds = catalog.db.$client.prepare("SELECT (SELECT group_concat(DISTINCT typeof(id)) FROM chunk_numbers) || ' ' || (SELECT group_concat(DISTINCT typeof(id) || typeof(pack_id)) FROM chunks) || ' ' || (SELECT typeof(id) FROM packs)").pluck().get();
    expect(kinds).toBe('blob blobblob blob');
    // The same chunk recorded again after the upgrade is the same row, not a second one under its bytes.
    catalog.importSnapshot(snapshot('snap_new', [{ id: a, size: 100 }]));
    expect(catalog.db.$client.prepare('SELECT count(*) FROM chunk_numbers').pluck().get()).toBe(2);
  });
});

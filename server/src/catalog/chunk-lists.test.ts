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
    const numbered = catalog.db.$client.prepare('SELECT id FROM chunk_numbers ORDER BY id').pluck().all();
    expect(numbered).toEqual([b, c].sort());

    // A chunk that comes back after its number went gets a new one, and the lists stay right.
    catalog.importSnapshot(snapshot('snap_3', [{ id: a, size: 100 }, { id: c, size: 300 }]));
    expect(catalog.chunksOf('art_snap_3')).toEqual([{ id: a, size: 100 }, { id: c, size: 300 }]);
    expect(catalog.chunksOf('art_snap_2')).toEqual(second);
  });

  it('are carried over from a catalog written before chunk numbers (migration 0005)', () => {
    const file = join(dir, 'old.db');
    // The catalog as the version before this one left it: migrations up to 0004 only.
    const migrations = join(dir, 'migrations');
    cpSync(fileURLToPath(new URL('../../drizzle', import.meta.url)), migrations, { recursive: true });
    const journalFile = join(migrations, 'meta', '_journal.json');
    const journal = JSON.parse(readFileSync(journalFile, 'utf8')) as { entries: { tag: string }[] };
    journal.entries = journal.entries.filter((e) => e.tag < '0005');
    writeFileSync(journalFile, JSON.stringify(journal));
    const old = new Database(file);
    old.pragma('journal_mode = WAL');
    migrate(drizzle(old), { migrationsFolder: migrations });
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
});

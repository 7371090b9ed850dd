import Database from 'better-sqlite3';
import { constants } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { getTableColumns, getTableName } from 'drizzle-orm';
import type { SQLiteTable } from 'drizzle-orm/sqlite-core';
import {
  describeError,
  LifeboatError,
  packIdOfKey,
  PACK_INDEX_PREFIX,
  PACKS_PREFIX,
  readPackIndex,
  readSnapshotManifest,
  snapshotIdOfKey,
  SNAPSHOTS_PREFIX,
  type Plan,
  type StoreBackend,
} from '@lifeboat/shared';
import { Catalog } from './catalog.js';
import { catalogDbOn } from './db.js';
import { agents, enrollmentTokens, jobs, plans } from './schema.js';

/**
 * `lifeboat-server rebuild-catalog`: the catalog rebuilt from the store alone (DESIGN §5), for when it was
 * lost or damaged. Snapshots, artifacts and chunk lists come only from the manifests in the store, and the chunk
 * index from the packs' index objects; plans from the manifests' plan bodies where the catalog has none; what
 * only the catalog ever knew (agents and their secrets, enrollment tokens, job history) is carried over from the
 * old catalog when it is readable.
 *
 * The server must be stopped: the old catalog is opened under an exclusive lock (refused while a server holds
 * it open), the new one is written to a fresh file and moved in place by rename, the old one kept beside it.
 */

export interface RebuildOptions {
  /** The server's data directory: DATA/catalog.db is replaced. */
  dataDir: string;
  backend: StoreBackend;
  /** Replace a catalog that lists snapshots already, and write one even when the store holds none. */
  force: boolean;
  /** Check that every chunk a manifest names is in the store's index, and that each indexed pack exists. */
  checkChunks: boolean;
  now: number;
  /** Progress for people (stderr). */
  progress?: (line: string) => void;
}

export interface ManifestProblem {
  key: string;
  problems: string[];
}

export interface RebuildReport {
  catalogFile: string;
  /** Where the catalog that was replaced now is, if there was one. */
  previousCatalog: string | null;
  /** Why the old catalog could not be read (then nothing was carried over from it). */
  previousCatalogProblem: string | null;
  manifests: number;
  snapshots: number;
  artifacts: number;
  chunkReferences: number;
  /** Plans recreated from the manifests' plan bodies (the catalog had none by that id). */
  plansFromManifests: string[];
  /** Plans in the new catalog, wherever they came from. */
  plans: number;
  /** Agents the manifests name and the catalog did not know: revoked rows named after their id. */
  placeholderAgents: { id: string; name: string }[];
  carriedOver: { agents: number; enrollmentTokens: number; plans: number; jobs: number } | null;
  /** Packs indexed from their index objects, and the chunks they hold. */
  packs: number;
  indexedChunks: number;
  /** Index objects left out (unreadable, or their pack is missing), with why. */
  packProblems: string[];
  /** Snapshots the old catalog listed that have no readable manifest in the store: not in the new catalog. */
  dropped: string[];
  /** Manifests left out, with why. */
  damaged: ManifestProblem[];
  /** Manifests rebuilt with a remark (e.g. a plan body this version no longer reads). */
  remarks: ManifestProblem[];
  /** Distinct chunks the snapshots reference, and how many of them are in no pack's index. */
  uniqueChunks: number;
  chunksWithoutStoredSize: number;
}

const CATALOG_FILE = 'catalog.db';
/** What a placeholder agent's secret hash is: not hex, so no secret ever matches it (auth.ts secretMatches). */
const NO_SECRET = 'placeholder: never enrolled on this catalog';

export async function rebuildCatalog(options: RebuildOptions): Promise<RebuildReport> {
  const { dataDir, backend, now } = options;
  const progress = options.progress ?? (() => undefined);
  const catalogFile = join(dataDir, CATALOG_FILE);
  const stamp = new Date(now).toISOString().replace(/[:.]/g, '-');
  const freshFile = `${catalogFile}.rebuild-${stamp}`;
  const backupFile = `${catalogFile}.bak-${stamp}`;

  const old = await openPreviousCatalog(catalogFile);
  let fresh: Catalog | null = null;
  try {
    if (old?.catalog && !options.force) {
      const count = old.catalog.countSnapshots();
      if (count > 0) {
        throw new LifeboatError(
          'conflict',
          `${catalogFile} lists ${count} snapshot(s) already; rebuilding replaces it (it is kept as ${basename(catalogFile)}.bak-<time>) — pass --force to do so`,
        );
      }
    }
    fresh = new Catalog(catalogDbOn(new Database(freshFile)));
    // A fresh file nobody else uses, fsynced as a whole before it is moved in place.
    fresh.db.$client.pragma('synchronous = OFF');

    const report: RebuildReport = {
      catalogFile,
      previousCatalog: null,
      previousCatalogProblem: old?.problem ?? null,
      manifests: 0,
      snapshots: 0,
      artifacts: 0,
      chunkReferences: 0,
      plansFromManifests: [],
      plans: 0,
      placeholderAgents: [],
      carriedOver: null,
      dropped: [],
      damaged: [],
      remarks: [],
      uniqueChunks: 0,
      chunksWithoutStoredSize: 0,
      packs: 0,
      indexedChunks: 0,
      packProblems: [],
    };
    let previousSnapshots = new Set<string>();
    if (old?.catalog) {
      const from = old.catalog.db.$client;
      const to = fresh.db.$client;
      report.carriedOver = {
        agents: copyTable(from, to, agents),
        enrollmentTokens: copyTable(from, to, enrollmentTokens),
        plans: copyTable(from, to, plans),
        jobs: copyTable(from, to, jobs),
      };
      previousSnapshots = new Set(from.prepare('SELECT id FROM snapshots').pluck().all() as string[]);
    }

    await indexPacks(backend, fresh, options, report, progress);

    const newestPlan = new Map<string, { at: number; plan: Plan }>();
    const agentsSeen = new Map<string, number>();
    const keys: string[] = [];
    for await (const key of backend.list(SNAPSHOTS_PREFIX)) if (key.endsWith('.json')) keys.push(key);
    keys.sort();
    report.manifests = keys.length;
    progress(`reading ${keys.length} snapshot manifest(s) from the store`);
    let lastProgress = Date.now();
    for (const [index, key] of keys.entries()) {
      if (Date.now() - lastProgress > 2000) {
        progress(`  ${index}/${keys.length} manifests read, ${report.snapshots} snapshot(s) rebuilt`);
        lastProgress = Date.now();
      }
      const problem = (problems: string[]) => report.damaged.push({ key, problems });
      if (snapshotIdOfKey(key) === null) {
        problem(['not a snapshot manifest name (snapshots/<id>.json)']);
        continue;
      }
      let bytes: Buffer;
      try {
        bytes = await backend.get(key);
      } catch (err) {
        problem([`cannot be read: ${describeError(err).message}`]);
        continue;
      }
      const read = readSnapshotManifest(bytes, key);
      if (!read.ok) {
        problem(read.problems);
        continue;
      }
      const { manifest } = read;
      if (options.checkChunks) {
        const missing = [...new Set(manifest.artifacts.flatMap((a) => a.chunks.map((c) => c.id)))].filter((id) => !fresh!.chunkLocation(id));
        if (missing.length) {
          problem([`names ${missing.length} chunk(s) the store does not hold (e.g. ${missing.slice(0, 3).map((id) => id.slice(0, 16) + '…').join(', ')}): it cannot be restored`]);
          continue;
        }
      }
      const createdAt = Date.parse(manifest.createdAt);
      try {
        fresh.importSnapshot({
          id: manifest.snapshotId,
          planId: manifest.planId,
          agentId: manifest.agentId,
          jobId: manifest.jobId,
          createdAt,
          startedAt: Date.parse(manifest.startedAt),
          artifacts: manifest.artifacts,
        });
      } catch (err) {
        // E.g. a snapshot or artifact id that another manifest already used (a copied or edited manifest).
        problem([`could not be recorded: ${describeError(err).message}`]);
        continue;
      }
      if (read.problems.length) report.remarks.push({ key, problems: read.problems });
      report.snapshots++;
      report.artifacts += manifest.artifacts.length;
      report.chunkReferences += manifest.artifacts.reduce((n, a) => n + a.chunks.length, 0);
      const known = newestPlan.get(manifest.planId);
      if (manifest.plan && (!known || known.at < createdAt)) newestPlan.set(manifest.planId, { at: createdAt, plan: manifest.plan });
      agentsSeen.set(manifest.agentId, Math.min(agentsSeen.get(manifest.agentId) ?? createdAt, createdAt));
    }

    if (report.snapshots === 0 && !options.force) {
      const why = keys.length === 0 ? `the store has no snapshot manifests (${SNAPSHOTS_PREFIX}*.json)` : `none of the store's ${keys.length} manifest(s) could be used`;
      throw new LifeboatError('not_found', `${why}; is --store right? Nothing was changed (pass --force to write an empty catalog anyway)`, report.damaged.slice(0, 20).map((d) => `${d.key}: ${d.problems.join('; ')}`));
    }

    // Plans kept from the previous catalog win: they are newer than any manifest's copy (and are not re-read here,
    // so one this version no longer parses does not stop the rebuild).
    const planIds = new Set(fresh.db.select({ id: plans.id }).from(plans).all().map((r) => r.id));
    for (const [planId, { at, plan }] of [...newestPlan].sort(([a], [b]) => a.localeCompare(b))) {
      if (planIds.has(planId)) continue;
      fresh.applyPlans([plan], at);
      planIds.add(planId);
      report.plansFromManifests.push(planId);
    }
    report.plans = planIds.size;
    for (const [agentId, firstSeen] of agentsSeen) {
      if (fresh.agentById(agentId)) continue;
      const name = fresh.agentByName(agentId) ? `${agentId}-restored` : agentId;
      fresh.db
        .insert(agents)
        .values({ id: agentId, name, labels: {}, secretHash: NO_SECRET, createdAt: firstSeen, lastSeenAt: null, revokedAt: now, hostname: null, version: null, tools: [] })
        .run();
      report.placeholderAgents.push({ id: agentId, name });
    }
    report.dropped = [...previousSnapshots].filter((id) => !fresh!.snapshot(id)).sort();
    const { total } = fresh.storeStats();
    report.uniqueChunks = total.uniqueChunks;
    report.chunksWithoutStoredSize = total.chunksWithoutStoredSize;

    fresh.close();
    fresh = null;
    await fsyncFile(freshFile);
    old?.close();
    await moveInPlace(catalogFile, freshFile, old ? backupFile : null);
    report.previousCatalog = old ? backupFile : null;
    return report;
  } catch (err) {
    fresh?.close();
    old?.close();
    if (!(err instanceof MoveFailed)) for (const suffix of ['', '-wal', '-shm']) await rm(freshFile + suffix, { force: true });
    throw err;
  }
}

class MoveFailed extends LifeboatError {}

/** The old catalog aside (with its WAL, if a crash left one), the new one in its place, the directory fsynced. */
async function moveInPlace(catalogFile: string, freshFile: string, backupFile: string | null): Promise<void> {
  try {
    if (backupFile) {
      await rename(catalogFile, backupFile);
      await rename(`${catalogFile}-wal`, `${backupFile}-wal`).catch(ignoreMissing);
      await rm(`${catalogFile}-shm`, { force: true });
    }
    await rename(freshFile, catalogFile);
    await fsyncFile(dirname(catalogFile));
  } catch (err) {
    // Nothing is deleted here: both catalogs stay where this message says.
    throw new MoveFailed('store_failed', `the rebuilt catalog is complete in ${freshFile} but could not be moved to ${catalogFile} (${(err as Error).message}); ${backupFile ? `the previous one is at ${backupFile} or still at ${catalogFile}; ` : ''}move it in place by hand`);
  }
}

interface PreviousCatalog {
  /** Null when the file is not a readable catalog (it is still moved aside). */
  catalog: Catalog | null;
  problem: string | null;
  close(): void;
}

/**
 * The catalog being replaced, under an exclusive lock: a server has it open all the time it runs (WAL mode
 * keeps a shared lock), so taking the lock fails while one does, and a server started meanwhile cannot open it.
 */
async function openPreviousCatalog(file: string): Promise<PreviousCatalog | null> {
  if (!(await exists(file))) return null;
  let sqlite: Database.Database;
  try {
    sqlite = new Database(file, { fileMustExist: true, timeout: 0 });
  } catch (err) {
    return { catalog: null, problem: `cannot open it: ${(err as Error).message}`, close: () => undefined };
  }
  try {
    sqlite.pragma('locking_mode = EXCLUSIVE');
    sqlite.exec('BEGIN EXCLUSIVE; COMMIT');
  } catch (err) {
    sqlite.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      throw new LifeboatError('conflict', `${file} is in use, most likely by a running lifeboat-server: stop the server first, then run rebuild-catalog again`);
    }
    return { catalog: null, problem: `it is not a readable database: ${(err as Error).message}`, close: () => undefined };
  }
  const close = () => {
    if (!sqlite.open) return;
    // Everything into the main file, so the copy kept beside the new catalog is whole on its own.
    try {
      sqlite.pragma('wal_checkpoint(TRUNCATE)');
    } catch {
      // A damaged file: it is kept as it is.
    }
    sqlite.close();
  };
  try {
    // Migrated like the server would on its next start, so its tables have today's columns.
    return { catalog: new Catalog(catalogDbOn(sqlite)), problem: null, close };
  } catch (err) {
    return { catalog: null, problem: `it is not a readable catalog: ${(err as Error).message}`, close };
  }
}

/** Copies a table row by row (streamed) between two catalogs with the same schema; returns the rows copied. */
function copyTable(from: Database.Database, to: Database.Database, table: SQLiteTable): number {
  const name = getTableName(table);
  const columns = Object.values(getTableColumns(table)).map((c) => `"${c.name}"`);
  const insert = to.prepare(`INSERT INTO "${name}" (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`);
  const select = from.prepare(`SELECT ${columns.join(', ')} FROM "${name}"`).raw();
  let copied = 0;
  to.transaction(() => {
    for (const row of select.iterate() as IterableIterator<unknown[]>) {
      insert.run(row);
      copied++;
    }
  })();
  return copied;
}

/** The chunk index from the store's index objects (each checked against its pack's existence with checkChunks). */
async function indexPacks(backend: StoreBackend, catalog: Catalog, options: RebuildOptions, report: RebuildReport, progress: (line: string) => void): Promise<void> {
  const stored = new Set<string>();
  if (options.checkChunks) {
    for await (const key of backend.list(PACKS_PREFIX)) {
      const id = packIdOfKey(key);
      if (id) stored.add(id);
    }
  }
  const keys: string[] = [];
  for await (const key of backend.list(PACK_INDEX_PREFIX)) if (packIdOfKey(key)) keys.push(key);
  progress(`reading ${keys.length} pack index(es) from the store`);
  for (const key of keys.sort()) {
    try {
      const index = readPackIndex(await backend.get(key), key);
      if (options.checkChunks && !stored.has(index.pack)) throw new LifeboatError('not_found', `${key}: its pack is missing from the store`);
      catalog.recordPack(index, options.now);
      report.packs++;
      report.indexedChunks += index.chunks.length;
    } catch (err) {
      report.packProblems.push(describeError(err).message);
    }
  }
}

/** What rebuild-catalog prints. */
export function rebuildSummary(report: RebuildReport): string[] {
  const lines = [
    `rebuilt ${report.catalogFile} from ${report.manifests} manifest(s): ${report.snapshots} snapshot(s), ${report.artifacts} artifact(s), ${report.chunkReferences} chunk reference(s), ${report.plans} plan(s) (${report.plansFromManifests.length} from manifests)`,
  ];
  if (report.plansFromManifests.length) lines.push(`plans recreated from the manifests (as they were at their newest snapshot; their schedules run again): ${report.plansFromManifests.join(', ')}`);
  if (report.carriedOver) {
    const c = report.carriedOver;
    lines.push(`kept from the previous catalog: ${c.agents} agent(s), ${c.plans} plan(s), ${c.jobs} job(s), ${c.enrollmentTokens} enrollment token(s)`);
  }
  lines.push(`indexed ${report.indexedChunks} chunk(s) in ${report.packs} pack(s) from the store's index objects`);
  if (report.packProblems.length) {
    lines.push(`${report.packProblems.length} pack index(es) were left out (their chunks count as missing):`, ...report.packProblems.slice(0, 20).map((p) => `  ${p}`));
  }
  if (report.previousCatalog) lines.push(`the previous catalog is kept as ${report.previousCatalog}`);
  if (report.previousCatalogProblem) lines.push(`the previous catalog could not be read (${report.previousCatalogProblem}); nothing was carried over from it`);
  if (report.chunksWithoutStoredSize) {
    lines.push(`${report.chunksWithoutStoredSize} of ${report.uniqueChunks} referenced chunk(s) are in no pack's index: \`lifeboat stats\` counts them at their plain size`);
  }
  if (report.placeholderAgents.length) {
    lines.push(
      `${report.placeholderAgents.length} agent(s) named by snapshots were not in the catalog: added as revoked placeholders (they cannot connect), named after their id:`,
      ...report.placeholderAgents.map((a) => `  ${a.name}`),
      '  enroll the machines again (lifeboat token create, then lifeboat-agent enroll --name <the name the plans use>); their snapshots stay restorable from any agent',
    );
  }
  if (report.dropped.length) {
    lines.push(`${report.dropped.length} snapshot(s) of the previous catalog have no usable manifest in the store and are not in the new catalog: ${report.dropped.slice(0, 20).join(', ')}${report.dropped.length > 20 ? ', …' : ''}`);
  }
  for (const r of report.remarks) lines.push(`note: ${r.key}: ${r.problems.join(' ')}`);
  if (report.damaged.length) {
    lines.push(`${report.damaged.length} manifest(s) were left out:`);
    for (const d of report.damaged) lines.push(`  ${d.key}: ${d.problems.join('; ')}`);
  }
  return lines;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

function ignoreMissing(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
}

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

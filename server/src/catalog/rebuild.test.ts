import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsBackend, packKey, Plan, snapshotManifestKey, StorePackIndex } from '@lifeboat/shared';
import { backupDriver } from '../backup-driver.suite.js';
import { Catalog } from './catalog.js';
import { openCatalogDb } from './db.js';
import { rebuildCatalog, rebuildSummary, type RebuildOptions } from './rebuild.js';

let dir: string;
let backend: FsBackend;
let clock: number;
const now = () => clock;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lifeboat-rebuild-'));
  backend = new FsBackend(join(dir, 'store'));
  clock = Date.parse('2025-03-01T02:00:00Z');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const catalogFile = () => join(dir, 'catalog.db');
const plan = (id: string, agent: string): Plan => Plan.parse({ id, agent, steps: [{ files: { paths: [`/srv/${id}`] } }] });

/** A catalog with two plans, three snapshots through the real JobService path; closed afterwards. */
async function backedUp(): Promise<{ snapshots: string[] }> {
  const catalog = new Catalog(openCatalogDb(catalogFile()));
  try {
    const driver = backupDriver(catalog, backend, now);
    await driver.encryption.decline();
    driver.enroll('web-1');
    driver.enroll('db-1');
    catalog.applyPlans([plan('web', 'web-1'), plan('db', 'db-1')], clock);
    const shared = randomBytes(1_500_000);
    const snapshots: string[] = [];
    for (const [planId, parts] of [
      ['web', [{ name: 'site', content: Buffer.concat([shared, randomBytes(700_000)]) }]],
      ['db', [{ name: 'dump', content: randomBytes(2_000_000) }, { name: 'config', content: Buffer.from('small config\n') }]],
      ['web', [{ name: 'site', content: Buffer.concat([shared, randomBytes(900_000)]) }]],
    ] as const) {
      clock += 3_600_000;
      snapshots.push((await driver.backUp(planId, [...parts])).snapshotId);
    }
    return { snapshots };
  } finally {
    catalog.close();
  }
}

/** Everything the catalog says about snapshots, in a comparable shape. */
function describeCatalog(file: string) {
  const catalog = new Catalog(openCatalogDb(file));
  try {
    return catalog
      .listSnapshots()
      .map((s) => ({ ...s, artifacts: catalog.artifactsOf(s.id).map((a) => ({ ...a, chunks: catalog.chunksOf(a.id) })) }))
      .sort((a, b) => a.id.localeCompare(b.id));
  } finally {
    catalog.close();
  }
}

function options(overrides: Partial<RebuildOptions> = {}): RebuildOptions {
  return { dataDir: dir, backend, force: false, checkChunks: true, now: clock + 1000, ...overrides };
}

/** The store loses the pack that holds a chunk. */
async function losePackOf(chunkId: string): Promise<void> {
  await backend.delete(packKey((await StorePackIndex.load(backend)).locate(chunkId)!.pack));
}

async function deleteCatalog(): Promise<void> {
  for (const suffix of ['', '-wal', '-shm']) await rm(catalogFile() + suffix, { force: true });
}

describe('rebuildCatalog', () => {
  it('rebuilds snapshots, artifacts and chunk lists exactly as the server recorded them', async () => {
    const { snapshots } = await backedUp();
    const before = describeCatalog(catalogFile());
    expect(before.map((s) => s.id).sort()).toEqual([...snapshots].sort());
    await deleteCatalog();

    const report = await rebuildCatalog(options());
    expect(report).toMatchObject({ manifests: 3, snapshots: 3, artifacts: 4, damaged: [], previousCatalog: null, carriedOver: null });
    expect(report.plansFromManifests).toEqual(['db', 'web']);
    expect(describeCatalog(catalogFile())).toEqual(before);

    const catalog = new Catalog(openCatalogDb(catalogFile()));
    try {
      expect(catalog.listPlans().map((p) => p.plan)).toEqual([plan('db', 'db-1'), plan('web', 'web-1')]);
      // Agents only the lost catalog knew come back as revoked placeholders named after their id.
      const agents = catalog.listAgents();
      expect(agents.map((a) => [a.name, a.revokedAt !== null])).toEqual([['agt_db1', true], ['agt_web1', true]]);
      expect(report.placeholderAgents.map((a) => a.name).sort()).toEqual(['agt_db1', 'agt_web1']);
      expect(rebuildSummary(report).join('\n')).toMatch(/revoked placeholders/);
    } finally {
      catalog.close();
    }
  });

  it('refuses to replace a catalog that lists snapshots unless forced, and then keeps its agents and jobs', async () => {
    await backedUp();
    await expect(rebuildCatalog(options())).rejects.toMatchObject({ code: 'conflict', message: expect.stringMatching(/3 snapshot\(s\) already.*--force/) });

    const before = new Catalog(openCatalogDb(catalogFile()));
    const agentsBefore = before.listAgents();
    const jobsBefore = before.listJobs({ limit: 100 }).length;
    before.close();

    const report = await rebuildCatalog(options({ force: true }));
    expect(report.carriedOver).toMatchObject({ agents: 2, plans: 2, jobs: jobsBefore });
    expect(report.placeholderAgents).toEqual([]);
    expect(report.plansFromManifests).toEqual([]);
    expect(report.previousCatalog).toMatch(/catalog\.db\.bak-/);
    const files = await readdir(dir);
    expect(files.filter((f) => f.startsWith('catalog.db.bak-'))).toHaveLength(1);
    expect(files.filter((f) => f.includes('.rebuild-'))).toEqual([]);

    const after = new Catalog(openCatalogDb(catalogFile()));
    try {
      expect(after.listAgents()).toEqual(agentsBefore);
      expect(after.listJobs({ limit: 100 })).toHaveLength(jobsBefore);
      expect(after.countSnapshots()).toBe(3);
    } finally {
      after.close();
    }
  });

  it('refuses while the catalog is open, as by a running server', async () => {
    await backedUp();
    const running = new Catalog(openCatalogDb(catalogFile()));
    try {
      await expect(rebuildCatalog(options({ force: true }))).rejects.toMatchObject({ code: 'conflict', message: expect.stringMatching(/in use.*stop the server/) });
    } finally {
      running.close();
    }
    expect((await readdir(dir)).filter((f) => f.startsWith('catalog.db'))).toEqual(['catalog.db']);
  });

  it('lists damaged manifests and rebuilds the rest', async () => {
    const { snapshots } = await backedUp();
    await deleteCatalog();
    const [first, second] = snapshots as [string, string, string];
    // One manifest cut short; one whose chunk the store lost; junk beside them.
    const stored = await backend.get(snapshotManifestKey(first));
    await backend.put(snapshotManifestKey(first), stored.subarray(0, stored.length / 2));
    const manifest = JSON.parse(gunzipSync(await backend.get(snapshotManifestKey(second))).toString()) as { artifacts: { chunks: { id: string }[] }[] };
    await losePackOf(manifest.artifacts[0]!.chunks.at(-1)!.id);
    await backend.put('snapshots/snap_renamed.json', await backend.get(snapshotManifestKey(snapshots[2]!)));

    const report = await rebuildCatalog(options());
    expect(report.snapshots).toBe(1);
    expect(report.damaged.map((d) => d.key).sort()).toEqual([snapshotManifestKey(first), snapshotManifestKey(second), 'snapshots/snap_renamed.json'].sort());
    const problems = Object.fromEntries(report.damaged.map((d) => [d.key, d.problems.join(' ')]));
    expect(problems[snapshotManifestKey(first)]).toMatch(/not valid gzip \(truncated or damaged\)/);
    expect(problems[snapshotManifestKey(second)]).toMatch(/[1-9] chunk\(s\) the store does not hold/);
    expect(report.packProblems).toEqual([expect.stringMatching(/its pack is missing from the store/)]);
    expect(problems['snapshots/snap_renamed.json']).toMatch(/not the one its key/);
    expect(rebuildSummary(report).join('\n')).toMatch(/3 manifest\(s\) were left out/);
    expect(describeCatalog(catalogFile()).map((s) => s.id)).toEqual([snapshots[2]]);
  });

  it('skips the chunk check when told to', async () => {
    const { snapshots } = await backedUp();
    await deleteCatalog();
    const manifest = JSON.parse(gunzipSync(await backend.get(snapshotManifestKey(snapshots[0]!))).toString()) as { artifacts: { chunks: { id: string }[] }[] };
    await losePackOf(manifest.artifacts[0]!.chunks[0]!.id);
    expect((await rebuildCatalog(options({ checkChunks: false }))).snapshots).toBe(3);
  });

  it('changes nothing when the store holds no manifests', async () => {
    await writeFile(join(dir, 'keep'), '');
    await expect(rebuildCatalog(options())).rejects.toMatchObject({ code: 'not_found', message: expect.stringMatching(/no snapshot manifests.*is --store right/) });
    expect(await readdir(dir)).toEqual(['keep']);
  });

  it('moves a catalog that is not a database aside instead of failing', async () => {
    await backedUp();
    await deleteCatalog();
    await writeFile(catalogFile(), 'this is not SQLite at all, and long enough to look like a header ........');
    const report = await rebuildCatalog(options());
    expect(report.snapshots).toBe(3);
    expect(report.previousCatalogProblem).toMatch(/not a readable/);
    expect(report.previousCatalog).toMatch(/bak-/);
  });
});

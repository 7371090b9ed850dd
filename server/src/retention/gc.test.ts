import { randomBytes } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { createLogger, encodeChunk, type FsBackend, packIndexKey, packKey, StorePackIndex, writePack } from '@lifeboat/shared';
import { backupDriverPerTest, type BackupDriver } from '../backup-driver.suite.js';
import type { Catalog } from '../catalog/catalog.js';
import { collectGarbage } from './gc.js';

const clock = Date.parse('2025-03-01T02:00:00Z');
const DAY = 86_400_000;
const fixture = backupDriverPerTest(['web'], () => clock);
let catalog: Catalog;
let backend: FsBackend;
let driver: BackupDriver;
beforeEach(() => ({ catalog, backend, driver } = fixture));

const gc = (options: { now?: number; graceMs?: number; dryRun?: boolean } = {}) =>
  collectGarbage(catalog, backend, driver.jobs, { now: options.now ?? clock + DAY, graceMs: options.graceMs ?? 0, dryRun: options.dryRun ?? false, log: createLogger('test', { level: 'error' }) });

const chunksOf = (snapshotId: string) => catalog.artifactsOf(snapshotId).flatMap((a) => catalog.chunksOf(a.id).map((c) => c.id));

async function objects(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of backend.list(prefix)) keys.push(key);
  return keys.sort();
}

describe('garbage collection over packs', () => {
  it('deletes a pack nothing references, after the grace period, and its index object with it', async () => {
    const gone = await driver.backUp('web', [{ name: 'site', content: randomBytes(2_000_000) }]);
    const kept = await driver.backUp('web', [{ name: 'site', content: randomBytes(1_500_000) }]);
    expect(await objects('packs/')).toHaveLength(2);
    catalog.deleteSnapshot(gone.snapshotId, clock);
    expect(await gc({ graceMs: 2 * DAY })).toMatchObject({ deleted: 0, packsDeleted: 0 });
    expect(await gc({ dryRun: true })).toMatchObject({ packsDeleted: 1 });
    expect(await objects('packs/')).toHaveLength(2);
    const report = await gc();
    expect(report).toMatchObject({ packsDeleted: 1, packsRewritten: 0 });
    expect(report.deleted).toBeGreaterThan(0);
    expect(await objects('packs/')).toHaveLength(1);
    expect(await objects('index/')).toHaveLength(1);
    for (const id of chunksOf(kept.snapshotId)) expect(driver.jobs.store.has(id)).toBe(true);
  });

  it('rewrites a pack that is mostly garbage, keeping its live chunks readable', async () => {
    const shared = randomBytes(4_000_000);
    // One upload, one pack: a shared part both snapshots hold, and a large part only the first one holds.
    const first = await driver.backUp('web', [{ name: 'site', content: Buffer.concat([shared, randomBytes(4_000_000)]) }]);
    const [oldPack] = await objects('index/');
    const second = await driver.backUp('web', [{ name: 'site', content: Buffer.concat([shared, randomBytes(600_000)]) }]);
    expect(chunksOf(second.snapshotId).filter((id) => chunksOf(first.snapshotId).includes(id)).length).toBeGreaterThan(0);
    catalog.deleteSnapshot(first.snapshotId, clock);
    const report = await gc();
    expect(report.packsRewritten).toBe(1);
    expect(report.bytesFreed).toBeGreaterThan(2_000_000);
    expect(await objects('index/')).not.toContain(oldPack);
    // Every chunk of the remaining snapshot reads back, from wherever it lies now, in the catalog and in the store alone.
    const index = await StorePackIndex.load(backend);
    for (const c of catalog.artifactsOf(second.snapshotId).flatMap((a) => catalog.chunksOf(a.id))) {
      expect((await driver.jobs.store.get(c.id, c.size)).length).toBeGreaterThan(0);
      expect(index.locate(c.id)).toEqual(catalog.chunkLocation(c.id));
    }
  });

  it('never takes for an orphan a pack whose writer finishes while the collection runs', async () => {
    const c = encodeChunk(randomBytes(10_000), { level: 0 });
    const writer = driver.jobs.store.writer();
    writer.add(c.id, c.stored, c.size);
    // The pack is sealed (object, index object, catalog rows) just as the collection lists the packs.
    const racing = Object.assign(Object.create(backend) as FsBackend, {
      async *list(prefix: string) {
        if (prefix === 'packs/') await writer.flush();
        yield* backend.list(prefix);
      },
    });
    await collectGarbage(catalog, racing, driver.jobs, { now: clock, graceMs: DAY, dryRun: false, log: createLogger('test', { level: 'error' }) });
    expect((await driver.jobs.store.get(c.id, c.size)).equals(c.stored)).toBe(true);
  });

  it('removes an orphan pack (no index object) and adopts an indexed pack the catalog does not know', async () => {
    await driver.backUp('web', [{ name: 'site', content: randomBytes(800_000) }]);
    const orphan = encodeChunk(randomBytes(10_000), { level: 0 });
    const adopted = encodeChunk(randomBytes(10_000), { level: 0 });
    const orphanIndex = await writePack(backend, [{ id: orphan.id, stored: orphan.stored, plainSize: orphan.size }]);
    await backend.delete(packIndexKey(orphanIndex.pack));
    const adoptedIndex = await writePack(backend, [{ id: adopted.id, stored: adopted.stored, plainSize: adopted.size }]);
    await gc({ now: clock, graceMs: DAY });
    expect(await backend.has(packKey(orphanIndex.pack))).toBe(false);
    expect(driver.jobs.store.has(adopted.id)).toBe(true);
    expect(catalog.chunkLocation(adopted.id)?.pack).toBe(adoptedIndex.pack);
    // Adopted as of now: unreferenced, it goes once the grace period has passed.
    expect(await gc({ now: clock + 2 * DAY, graceMs: DAY })).toMatchObject({ packsDeleted: 1 });
    expect(driver.jobs.store.has(adopted.id)).toBe(false);
  });
});

import { randomBytes } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { type FsBackend, StorePackIndex } from '@lifeboat/shared';
import { backupDriverPerTest, type BackupDriver } from '../backup-driver.suite.js';
import type { Catalog } from './catalog.js';
import { chunks } from './schema.js';

let clock = Date.parse('2025-03-01T02:00:00Z');
const fixture = backupDriverPerTest(['web', 'app', 'idle'], () => clock);
let catalog: Catalog;
let backend: FsBackend;
let driver: BackupDriver;
beforeEach(() => ({ catalog, backend, driver } = fixture));

/** What the store really holds for a set of chunks, as its pack index objects say. */
async function storedBytes(ids: Iterable<string>): Promise<number> {
  const index = await StorePackIndex.load(backend);
  let total = 0;
  for (const id of new Set(ids)) total += index.locate(id)!.length;
  return total;
}

function chunkIdsOf(planId: string): string[] {
  return catalog.listSnapshots({ planId }).flatMap((s) => catalog.artifactsOf(s.id).flatMap((a) => catalog.chunksOf(a.id).map((c) => c.id)));
}

describe('Catalog.storeStats', () => {
  it('counts bytes in per snapshot and every referenced chunk once at its stored size', async () => {
    // Longer than the largest chunk: a repeated line may hold no content-defined cut point, and then the chunk
    // that ends at CHUNK_MAX is the one both plans surely share (with 3 MB of it, the test failed 1 run in 5).
    const text = Buffer.from('a log line that compresses well, over and over again\n'.repeat(200_000));
    const noise = randomBytes(1_200_000);
    await driver.backUp('web', [{ name: 'site', content: Buffer.concat([text, noise]) }]);
    clock += 1000;
    await driver.backUp('web', [{ name: 'site', content: Buffer.concat([text, noise]) }]);
    clock += 1000;
    await driver.backUp('app', [{ name: 'app', content: Buffer.concat([text, noise, randomBytes(600_000)]) }]);

    const stats = catalog.storeStats();
    const size = text.length + noise.length;
    const web = stats.plans.find((p) => p.planId === 'web')!;
    expect(web).toMatchObject({ snapshots: 2, bytesIn: 2 * size, uniqueChunks: new Set(chunkIdsOf('web')).size, chunksWithoutStoredSize: 0 });
    expect(web.bytesStored).toBe(await storedBytes(chunkIdsOf('web')));
    // Compressed and deduplicated: far less stored than backed up.
    expect(web.bytesStored).toBeLessThan(size / 2);
    expect(stats.plans.find((p) => p.planId === 'idle')).toEqual({ planId: 'idle', snapshots: 0, bytesIn: 0, uniqueChunks: 0, bytesStored: 0, chunksWithoutStoredSize: 0 });

    const all = [...chunkIdsOf('web'), ...chunkIdsOf('app')];
    expect(stats.total).toMatchObject({ snapshots: 3, uniqueChunks: new Set(all).size, bytesStored: await storedBytes(all) });
    expect(stats.total.bytesIn).toBe(stats.plans.reduce((n, p) => n + p.bytesIn, 0));
    // Chunks shared between plans count in both plans, once in the total.
    const perPlan = stats.plans.reduce((n, p) => n + p.bytesStored, 0);
    expect(perPlan).toBeGreaterThan(stats.total.bytesStored);
  });

  it('counts chunks whose stored size was never recorded at their plain size, and says how many', async () => {
    const content = Buffer.from('compressible text\n'.repeat(200_000));
    await driver.backUp('web', [{ name: 'site', content }]);
    catalog.db.delete(chunks).run();
    const stats = catalog.storeStats().total;
    expect(stats.chunksWithoutStoredSize).toBe(stats.uniqueChunks);
    expect(stats.bytesStored).toBe(content.length);
  });

  it('records a chunk the store already held only once', async () => {
    const content = randomBytes(1_000_000);
    const first = await driver.backUp('web', [{ name: 'site', content }]);
    const second = await driver.backUp('web', [{ name: 'site', content }]);
    expect(first.sent).toBeGreaterThan(0);
    expect(second.sent).toBe(0);
    expect(catalog.db.select().from(chunks).all()).toHaveLength(new Set(chunkIdsOf('web')).size);
  });
});

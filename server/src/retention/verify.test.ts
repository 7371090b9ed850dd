import { randomBytes } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { createLogger, type FsBackend, packKey } from '@lifeboat/shared';
import { backupDriverPerTest, type BackupDriver } from '../backup-driver.suite.js';
import type { Catalog } from '../catalog/catalog.js';
import { verifyStore } from './verify.js';

const clock = Date.parse('2025-03-01T02:00:00Z');
const fixture = backupDriverPerTest(['web', 'app'], () => clock);
let catalog: Catalog;
let backend: FsBackend;
let driver: BackupDriver;
beforeEach(() => ({ catalog, backend, driver } = fixture));

const log = createLogger('test', { level: 'error' });
const referenced = (planId?: string) =>
  [...new Set(catalog.listSnapshots(planId ? { planId } : {}).flatMap((s) => catalog.artifactsOf(s.id).flatMap((a) => catalog.chunksOf(a.id).map((c) => c.id))))].sort();

describe('verify', () => {
  it('reads the referenced chunks a page at a time, each once, for one plan or all', async () => {
    // Random data past the largest chunk, shared by both plans' first snapshots: several chunks each, some in common.
    const shared = randomBytes(9_000_000);
    await driver.backUp('web', [{ name: 'site', content: shared }]);
    await driver.backUp('web', [{ name: 'site', content: Buffer.concat([shared, randomBytes(3_000_000)]) }]);
    await driver.backUp('app', [{ name: 'app', content: Buffer.concat([randomBytes(2_000_000), shared]) }]);
    expect(referenced().length).toBeGreaterThan(referenced('web').length);

    const pages: string[][] = [];
    for (let after = ''; ; ) {
      const page = catalog.referencedChunksPage({ afterId: after, limit: 2 });
      if (page.length === 0) break;
      expect(page.length).toBeLessThanOrEqual(2);
      pages.push(page.map((c) => c.id));
      after = page.at(-1)!.id;
    }
    expect(pages.flat()).toEqual(referenced());
    expect(catalog.referencedChunksPage({ planId: 'web', afterId: '', limit: 1000 }).map((c) => c.id)).toEqual(referenced('web'));

    for (const pageSize of [1, 1000]) {
      const all = await verifyStore(catalog, backend, { readData: true, log, pageSize });
      expect(all).toMatchObject({ snapshots: 3, chunks: referenced().length, problems: [], damaged: [] });
      expect(await verifyStore(catalog, backend, { planId: 'app', readData: false, log, pageSize })).toMatchObject({ snapshots: 1, chunks: referenced('app').length, problems: [] });
    }
  });

  it('finds a missing pack across pages and marks every snapshot it breaks', async () => {
    const web = await driver.backUp('web', [{ name: 'site', content: randomBytes(3_000_000) }]);
    await driver.backUp('app', [{ name: 'app', content: randomBytes(3_000_000) }]);
    const lost = catalog.chunkLocation(catalog.chunksOf(catalog.artifactsOf(web.snapshotId)[0]!.id)[0]!.id)!;
    await backend.delete(packKey(lost.pack));
    const report = await verifyStore(catalog, backend, { readData: false, log, pageSize: 1 });
    expect(report.chunks).toBe(referenced().length);
    expect(report.problems.length).toBeGreaterThan(0);
    expect(report.problems.every((p) => p.problem === 'missing from the store' && p.snapshots.includes(web.snapshotId))).toBe(true);
    expect(report.damaged).toEqual([web.snapshotId]);
    expect(catalog.listSnapshots({ planId: 'web' })[0]!.status).toBe('damaged');
  });
});

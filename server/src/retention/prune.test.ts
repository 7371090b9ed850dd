import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createLogger, snapshotManifestKey, type StoreBackend } from '@lifeboat/shared';
import { backupDriverPerTest } from '../backup-driver.suite.js';
import { removeSnapshots, type PlanPruneReport } from './prune.js';

const clock = Date.parse('2025-03-01T02:00:00Z');
const fixture = backupDriverPerTest(['web'], () => clock);
const log = createLogger('test', { level: 'error' });

const removing = (...ids: string[]): PlanPruneReport[] => [{ planId: 'web', keep: [], remove: ids.map((id) => ({ id, reasons: ['test'] })) }];

async function manifestExists(backend: StoreBackend, snapshotId: string): Promise<boolean> {
  return backend.get(snapshotManifestKey(snapshotId)).then(
    () => true,
    () => false,
  );
}

describe('removing snapshots', () => {
  it('deletes the manifest while the catalog row still protects its chunks, then the row', async () => {
    const { catalog, backend, driver } = fixture;
    const { snapshotId } = await driver.backUp('web', [{ name: 'site', content: randomBytes(100_000) }]);
    const rowAtManifestDelete: boolean[] = [];
    const watched: StoreBackend = Object.assign(Object.create(backend) as StoreBackend, {
      delete: async (key: string) => {
        rowAtManifestDelete.push(catalog.snapshot(snapshotId) !== undefined);
        await backend.delete(key);
      },
    });
    expect(await removeSnapshots(catalog, watched, removing(snapshotId), clock, log)).toBe(1);
    // The other order left a window with a manifest and no row: garbage collection could then delete the chunks a
    // rebuilt catalog would point at.
    expect(rowAtManifestDelete).toEqual([true]);
    expect(catalog.snapshot(snapshotId)).toBeUndefined();
    expect(await manifestExists(backend, snapshotId)).toBe(false);
  });

  it('keeps the snapshot, row and manifest, when the store refuses the deletion', async () => {
    const { catalog, backend, driver } = fixture;
    const { snapshotId } = await driver.backUp('web', [{ name: 'site', content: randomBytes(100_000) }]);
    const refusing: StoreBackend = Object.assign(Object.create(backend) as StoreBackend, {
      delete: async () => {
        throw new Error('connect ECONNREFUSED 127.0.0.1:9000');
      },
    });
    await expect(removeSnapshots(catalog, refusing, removing(snapshotId), clock, log)).rejects.toMatchObject({
      code: 'store_failed',
      message: expect.stringMatching(new RegExp(`snapshot ${snapshotId}: .*kept.*ECONNREFUSED.*prune again`)),
    });
    expect(catalog.snapshot(snapshotId)).toBeDefined();
    expect(await manifestExists(backend, snapshotId)).toBe(true);
  });

  it('finishes a prune cut off between the manifest and the row', async () => {
    const { catalog, backend, driver } = fixture;
    const { snapshotId } = await driver.backUp('web', [{ name: 'site', content: randomBytes(100_000) }]);
    await backend.delete(snapshotManifestKey(snapshotId));
    expect(await removeSnapshots(catalog, backend, removing(snapshotId), clock, log)).toBe(1);
    expect(catalog.snapshot(snapshotId)).toBeUndefined();
  });
});

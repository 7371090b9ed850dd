import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsBackend, LifeboatError, newEncryptionSettings, Plan, type StoreBackend } from '@lifeboat/shared';
import { backupDriver } from './backup-driver.suite.js';
import { Catalog } from './catalog/catalog.js';
import { openCatalogDb } from './catalog/db.js';
import { ENCRYPTION_UNDECIDED, RepositoryEncryption, type SnapshotStorage } from './encryption.js';

let dir = '';
let backend: FsBackend;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lifeboat-encryption-'));
  backend = new FsBackend(join(dir, 'store'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The repository as a restarted server sees it, its catalog's snapshots stored as said (null: none). */
async function reloaded(snapshotsAre: SnapshotStorage = null, store: StoreBackend = backend): Promise<RepositoryEncryption> {
  const encryption = new RepositoryEncryption(store);
  await encryption.load(async () => snapshotsAre);
  return encryption;
}

function refusal(fn: () => void): LifeboatError {
  try {
    fn();
  } catch (err) {
    return err as LifeboatError;
  }
  throw new Error('expected a refusal');
}

describe('repository encryption: chosen before the first backup', () => {
  it('refuses backups in a new repository, saying how to choose', async () => {
    const encryption = await reloaded();
    expect(encryption.state).toBe('undecided');
    const err = refusal(() => encryption.requireChoice());
    expect(err.code).toBe('conflict');
    expect(err.message).toBe(ENCRYPTION_UNDECIDED);
    expect(err.message).toMatch(/lifeboat encryption init --passphrase-file FILE.*lifeboat encryption off/);
  });

  it('fails a backup job queued before the choice (by an earlier version) instead of sending it', async () => {
    const catalog = new Catalog(openCatalogDb(join(dir, 'catalog.db')));
    try {
      const clock = Date.parse('2025-03-01T02:00:00Z');
      const driver = backupDriver(catalog, backend, () => clock);
      const agentId = driver.enroll('web-1');
      catalog.applyPlans([Plan.parse({ id: 'web', agent: 'web-1', steps: [{ files: { paths: ['/srv'] } }] })], clock);
      // As an earlier version queued it, without asking.
      const { job } = catalog.createBackupJobUnlessActive({ id: 'job_queued1', planId: 'web', agentId, trigger: 'schedule', now: clock });
      driver.jobs.dispatch(agentId);
      expect(catalog.job(job.id)).toMatchObject({ status: 'failed', errorCode: 'conflict', errorMessage: ENCRYPTION_UNDECIDED });
      expect(driver.sent.filter((m) => m.type === 'job.backup')).toEqual([]);
    } finally {
      catalog.close();
    }
  });

  it('keeps "off" across restarts, and can still be encrypted later', async () => {
    await (await reloaded()).decline();
    const restarted = await reloaded();
    expect(restarted.state).toBe('unencrypted');
    expect(() => restarted.requireChoice()).not.toThrow();
    const settings = newEncryptionSettings('a passphrase long enough');
    await restarted.init(settings);
    expect((await reloaded()).state).toBe('encrypted');
    expect((await reloaded()).current).toEqual(settings);
  });

  it('never turns encryption off once it is on', async () => {
    await (await reloaded()).init(newEncryptionSettings('a passphrase long enough'));
    const encryption = await reloaded();
    await expect(encryption.decline()).rejects.toMatchObject({ code: 'conflict', message: expect.stringMatching(/cannot be turned off/) });
    expect((await reloaded()).state).toBe('encrypted');
    // With its settings in the store, a start reads no chunk to find out.
    let asked = false;
    await new RepositoryEncryption(backend).load(async () => ((asked = true), null));
    expect(asked).toBe(false);
  });

  it('counts a repository that already held plaintext snapshots as left unencrypted', async () => {
    expect((await reloaded('plaintext')).state).toBe('unencrypted');
    // Recorded in the store: it stays so even for a catalog rebuilt empty.
    expect((await reloaded(null)).state).toBe('unencrypted');
  });

  it('counts it so in memory when the store cannot be written', async () => {
    const readOnly: StoreBackend = Object.assign(Object.create(backend) as FsBackend, { put: () => Promise.reject(new Error('read-only')) });
    expect((await reloaded('plaintext', readOnly)).state).toBe('unencrypted');
    expect((await reloaded(null)).state).toBe('undecided');
  });

  it('refuses to start on encrypted snapshots whose settings are gone, rather than back up in plaintext', async () => {
    await expect(reloaded('encrypted')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/snapshots are encrypted, but its config\/encryption.json .* is missing: put it back/) });
  });
});

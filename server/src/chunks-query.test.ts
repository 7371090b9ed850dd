import { createCipheriv, randomBytes, randomUUID } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunkListDigest, createLogger, readSnapshotManifest, snapshotManifestKey, type ChunkUse, type FsBackend } from '@lifeboat/shared';
import { backupDriverPerTest, type BackupDriver } from './backup-driver.suite.js';
import { Catalog } from './catalog/catalog.js';
import { openCatalogDb } from './catalog/db.js';
import { rebuildCatalog } from './catalog/rebuild.js';
import { collectGarbage } from './retention/gc.js';

const clock = Date.parse('2025-03-01T02:00:00Z');
const fixture = backupDriverPerTest(['web', 'app'], () => clock);
let catalog: Catalog;
let backend: FsBackend;
let driver: BackupDriver;
beforeEach(() => ({ catalog, backend, driver } = fixture));

/**
 * Incompressible bytes that always cut into the same chunks (several: random bytes of this size hold no cut
 * point about once in a hundred).
 */
const fixedBytes = (size: number) => createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16)).update(Buffer.alloc(size));

describe('chunks.query (what a files cache may reuse)', () => {
  it('names the absent chunks, and keeps the present ones from garbage collection until the job ends', async () => {
    const { snapshotId } = await driver.backUp('web', [{ name: 'site', content: fixedBytes(3_000_000) }]);
    const stored = catalog.artifactsOf(snapshotId).flatMap((a) => catalog.chunksOf(a.id).map((c) => c.id));
    expect(stored.length).toBeGreaterThan(1);
    const never = 'f'.repeat(64);
    const { job } = driver.jobs.requestBackup('app', 'manual');
    driver.jobs.onStarted(job.agentId, { jobId: job.id });
    for (const id of stored) expect(driver.jobs.isChunkInFlight(id)).toBe(false);

    const queryId = randomUUID();
    await driver.jobs.onChunksQuery(job.agentId, { jobId: job.id, queryId, chunkIds: [...stored, never] });
    const answer = driver.sent.find((m) => m.type === 'chunks.absent' && m.payload.queryId === queryId);
    expect(answer?.payload.chunkIds).toEqual([never]);
    for (const id of stored) expect(driver.jobs.isChunkInFlight(id)).toBe(true);
    // The snapshot that referenced them goes; the claim alone keeps them through a collection with no grace.
    catalog.deleteSnapshot(snapshotId, clock);
    const gc = () => collectGarbage(catalog, backend, driver.jobs, { now: clock + 86_400_000, graceMs: 0, dryRun: false, log: createLogger('test', { level: 'error' }) });
    expect(await gc()).toMatchObject({ deleted: 0, spared: stored.length });
    for (const id of stored) expect(driver.jobs.store.has(id)).toBe(true);

    await driver.jobs.onFinished(job.agentId, { jobId: job.id, ok: false, error: { code: 'cancelled', message: 'test' } });
    expect(driver.jobs.isChunkInFlight(stored[0]!)).toBe(false);
    expect(await gc()).toMatchObject({ deleted: stored.length, packsDeleted: 1 });
    for (const id of stored) expect(driver.jobs.store.has(id)).toBe(false);
  });

  it('takes chunks sent as reused only when a chunks.query of the job found them', async () => {
    const { snapshotId } = await driver.backUp('web', [{ name: 'site', content: randomBytes(3_000_000) }]);
    const stored = catalog.artifactsOf(snapshotId).flatMap((a) => catalog.chunksOf(a.id));
    const { job } = driver.jobs.requestBackup('web', 'manual');
    const agentId = job.agentId;
    driver.jobs.onStarted(agentId, { jobId: job.id });
    const failed = (uploadId: string) => driver.sent.find((m) => m.type === 'upload.failed' && m.payload.uploadId === uploadId)?.payload.error;

    const unasked = randomUUID();
    driver.jobs.onArtifactBegin(agentId, { jobId: job.id, uploadId: unasked, step: 0, kind: 'files', name: 'site' });
    driver.jobs.onChunksReused(agentId, { uploadId: unasked, chunks: stored });
    expect(failed(unasked)).toMatchObject({ code: 'protocol', message: expect.stringMatching(/no chunks.query of job .* found it/) });

    await driver.jobs.onChunksQuery(agentId, { jobId: job.id, queryId: randomUUID(), chunkIds: stored.map((c) => c.id) });
    const uploadId = randomUUID();
    const size = stored.reduce((n, c) => n + c.size, 0);
    driver.jobs.onArtifactBegin(agentId, { jobId: job.id, uploadId, step: 0, kind: 'files', name: 'site' });
    driver.jobs.onChunksReused(agentId, { uploadId, chunks: stored });
    const metadata = { kind: 'files' as const, paths: ['/srv/site'], entries: 1, files: 1, directories: 0, symlinks: 0, fileBytes: size };
    await driver.jobs.onArtifactEnd(agentId, { jobId: job.id, uploadId, size, sha256: chunkListDigest(stored), chunks: stored.length, metadata });
    expect(failed(uploadId)).toBeUndefined();
    await driver.jobs.onFinished(agentId, { jobId: job.id, ok: true, artifacts: 1 });
    const done = catalog.job(job.id)!;
    expect(done.status).toBe('succeeded');
    expect(catalog.artifactsOf(done.snapshotId!).flatMap((a) => catalog.chunksOf(a.id))).toEqual(stored);
  });

  it('records slices of reused chunks in the catalog and the snapshot\'s manifest, and rebuild-catalog keeps them', async () => {
    const { snapshotId } = await driver.backUp('web', [{ name: 'site', content: fixedBytes(3_000_000) }]);
    const [a, b, ...rest] = catalog.artifactsOf(snapshotId).flatMap((x) => catalog.chunksOf(x.id)) as [ChunkUse, ChunkUse, ...ChunkUse[]];
    expect(rest.length).toBeGreaterThan(0);
    const { job } = driver.jobs.requestBackup('web', 'manual');
    const agentId = job.agentId;
    driver.jobs.onStarted(agentId, { jobId: job.id });
    await driver.jobs.onChunksQuery(agentId, { jobId: job.id, queryId: randomUUID(), chunkIds: [a.id, b.id] });
    const list: ChunkUse[] = [{ ...a, offset: 100, length: 1000 }, b, { ...a, offset: 5000, length: 20 }];
    const size = 1000 + b.size + 20;
    const uploadId = randomUUID();
    driver.jobs.onArtifactBegin(agentId, { jobId: job.id, uploadId, step: 0, kind: 'files', name: 'site' });
    driver.jobs.onChunksReused(agentId, { uploadId, chunks: list });
    const metadata = { kind: 'files' as const, paths: ['/srv/site'], entries: 1, files: 1, directories: 0, symlinks: 0, fileBytes: size };
    await driver.jobs.onArtifactEnd(agentId, { jobId: job.id, uploadId, size, sha256: chunkListDigest(list), chunks: list.length, metadata });
    await driver.jobs.onFinished(agentId, { jobId: job.id, ok: true, artifacts: 1 });
    const sliced = catalog.job(job.id)!.snapshotId!;
    const recorded = () => catalog.artifactsOf(sliced).flatMap((x) => catalog.chunksOf(x.id));
    expect(recorded()).toEqual(list);
    const manifest = readSnapshotManifest(await backend.get(snapshotManifestKey(sliced)));
    expect(manifest.ok && manifest.manifest.format).toBe(2);
    expect(manifest.ok && manifest.manifest.artifacts[0]!.chunks).toEqual(list);

    // The first snapshot goes: chunk a, used only through slices now, still counts as referenced, and stays.
    catalog.deleteSnapshot(snapshotId, clock);
    const report = await collectGarbage(catalog, backend, driver.jobs, { now: clock + 86_400_000, graceMs: 0, dryRun: false, log: createLogger('test', { level: 'error' }) });
    expect(report).toMatchObject({ scanned: rest.length + 2, referenced: 2 });
    expect(driver.jobs.store.has(a.id)).toBe(true);
    expect(driver.jobs.store.has(b.id)).toBe(true);

    const dataDir = await mkdtemp(join(tmpdir(), 'lifeboat-rebuild-slices-'));
    try {
      await rebuildCatalog({ dataDir, backend, force: false, checkChunks: true, now: clock });
      const rebuilt = new Catalog(openCatalogDb(join(dataDir, 'catalog.db')));
      try {
        expect(rebuilt.artifactsOf(sliced).flatMap((x) => rebuilt.chunksOf(x.id))).toEqual(list);
      } finally {
        rebuilt.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses a query from a job that is not a backup in progress', async () => {
    await expect(driver.jobs.onChunksQuery('agt_web1', { jobId: 'job_none', queryId: randomUUID(), chunkIds: ['a'.repeat(64)] })).rejects.toMatchObject({ code: 'protocol' });
  });
});

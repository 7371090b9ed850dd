import { randomBytes, randomUUID } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { chunkListDigest, encodeChunk, encodeFrame, FrameKind, UPLOAD_WINDOW, type EncodedChunk } from '@lifeboat/shared';
import { backupDriverPerTest, type BackupDriver } from './backup-driver.suite.js';
import type { Catalog } from './catalog/catalog.js';

const clock = Date.parse('2025-03-01T02:00:00Z');
const fixture = backupDriverPerTest(['web', 'app'], () => clock);
let catalog: Catalog;
let driver: BackupDriver;
beforeEach(() => ({ catalog, driver } = fixture));

const newChunk = (bytes = 50_000): EncodedChunk => encodeChunk(randomBytes(bytes), { level: 3 });

/** A backup job of plan app with one upload begun, as an agent starts one. */
function beginUpload(): { agentId: string; jobId: string; uploadId: string } {
  const { job } = driver.jobs.requestBackup('app', 'manual');
  driver.jobs.onStarted(job.agentId, { jobId: job.id });
  const uploadId = randomUUID();
  driver.jobs.onArtifactBegin(job.agentId, { jobId: job.id, uploadId, step: 0, kind: 'files', name: 'app' });
  return { agentId: job.agentId, jobId: job.id, uploadId };
}

async function sentOnce(type: string, uploadId: string): Promise<Record<string, unknown>[]> {
  for (let i = 0; i < 500 && !driver.sent.some((m) => m.type === type && m.payload.uploadId === uploadId); i++) await new Promise((r) => setTimeout(r, 2));
  return driver.sent.filter((m) => m.type === type && m.payload.uploadId === uploadId).map((m) => m.payload);
}

describe('chunks.offer (batched offers)', () => {
  it('answers a batch at once (what the store holds, what it wants) and acknowledges the uploads of one turn together', async () => {
    const { snapshotId } = await driver.backUp('web', [{ name: 'site', content: randomBytes(1_000_000) }]);
    const held = catalog.artifactsOf(snapshotId).flatMap((a) => catalog.chunksOf(a.id))[0]!;
    const fresh = [newChunk(), newChunk(), newChunk()];
    const { agentId, jobId, uploadId } = beginUpload();
    const offered = [{ id: held.id, size: held.size }, ...fresh.map((c) => ({ id: c.id, size: c.size }))];
    driver.jobs.onChunksOffer(agentId, { uploadId, chunks: offered });

    const answers = await sentOnce('chunks.answer', uploadId);
    expect(answers).toEqual([{ uploadId, have: [held.id], want: fresh.map((c) => c.id) }]);
    for (const c of fresh) driver.jobs.onFrame(agentId, encodeFrame(FrameKind.Upload, uploadId, c.id, c.stored));
    const acks = await sentOnce('chunks.ack', uploadId);
    expect(acks).toEqual([{ uploadId, chunkIds: fresh.map((c) => c.id) }]);

    const size = offered.reduce((n, c) => n + c.size, 0);
    const metadata = { kind: 'files' as const, paths: ['/srv/app'], entries: 1, files: 1, directories: 0, symlinks: 0, fileBytes: size };
    await driver.jobs.onArtifactEnd(agentId, { jobId, uploadId, size, sha256: chunkListDigest(offered), chunks: offered.length, metadata });
    expect(await sentOnce('artifact.stored', uploadId)).toHaveLength(1);
    await driver.jobs.onFinished(agentId, { jobId, ok: true, artifacts: 1 });
    const done = catalog.job(jobId)!;
    expect(done.status).toBe('succeeded');
    expect(catalog.artifactsOf(done.snapshotId!).flatMap((a) => catalog.chunksOf(a.id))).toEqual(offered);
  });

  it('wants a chunk offered twice in one batch twice, and refuses offers past the window', async () => {
    const twice = newChunk();
    const { agentId, uploadId } = beginUpload();
    driver.jobs.onChunksOffer(agentId, { uploadId, chunks: [twice, twice].map((c) => ({ id: c.id, size: c.size })) });
    expect(await sentOnce('chunks.answer', uploadId)).toEqual([{ uploadId, have: [], want: [twice.id, twice.id] }]);

    const many = Array.from({ length: UPLOAD_WINDOW - 1 }, () => newChunk(1000));
    expect(() => driver.jobs.onChunksOffer(agentId, { uploadId, chunks: many.map((c) => ({ id: c.id, size: c.size })) })).toThrow(/exceeded the flow-control window/);
  });
});

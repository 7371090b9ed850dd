import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import {
  ChunkListDigest,
  ContentDefinedChunker,
  createLogger,
  encodeChunk,
  FsBackend,
  Plan,
  encodeFrame,
  FrameKind,
  type ArtifactMetadata,
  type ChunkKeys,
  type StoreBackend,
} from '@lifeboat/shared';
import { hashSecret } from './auth.js';
import { Catalog } from './catalog/catalog.js';
import { openCatalogDb } from './catalog/db.js';
import { RepositoryEncryption } from './encryption.js';
import { JobService, type AgentLink } from './jobs.js';

/**
 * Backs up through the real JobService path, the way an agent does over the socket: offers, frames for the
 * chunks the server wants, artifact end, job finished. For tests of what the server records (manifests, catalog).
 */
export interface BackupDriver {
  jobs: JobService;
  encryption: RepositoryEncryption;
  /** Every message the server sent to an agent, in order. */
  sent: { agentId: string; type: string; payload: Record<string, unknown> }[];
  /** Enrolls an agent directly in the catalog; returns its id. */
  enroll(name: string): string;
  backUp(planId: string, artifacts: { name: string; content: Buffer }[], options?: { keys?: ChunkKeys & { keyCheck: string } }): Promise<{ snapshotId: string; sent: number }>;
}

export function backupDriver(catalog: Catalog, backend: StoreBackend, clock: () => number): BackupDriver {
  const encryption = new RepositoryEncryption(backend);
  const jobs = new JobService(catalog, backend, encryption, clock, createLogger('test', { level: 'error' }));
  const sent: { agentId: string; type: string; payload: Record<string, unknown> }[] = [];
  const link: AgentLink = {
    isOnline: () => true,
    send: (agentId, type, payload) => {
      sent.push({ agentId, type, payload: payload as Record<string, unknown> });
      return true;
    },
    sendBinary: () => true,
  };
  jobs.attach(link);

  /** The server's answer to the offer of one chunk: 'have', 'want', or 'upload.failed'. */
  const answerFor = async (uploadId: string, chunkId: string, from: number): Promise<string> => {
    for (let i = 0; i < 1000; i++) {
      for (const m of sent.slice(from)) {
        if (m.payload.uploadId !== uploadId) continue;
        if (m.type === 'upload.failed') return m.type;
        if (m.type === 'chunks.answer') return (m.payload.want as string[]).includes(chunkId) ? 'want' : 'have';
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    throw new Error(`no answer to the offer of ${chunkId}`);
  };

  return {
    jobs,
    encryption,
    sent,
    enroll(name) {
      const agentId = `agt_${name.replace(/[^a-z0-9]/g, '')}`;
      const token = `tok-${name}`;
      catalog.addEnrollmentToken({ id: `tok_${name}`, tokenHash: hashSecret(token), createdAt: clock(), expiresAt: clock() + 3_600_000 });
      catalog.enroll({ tokenHash: hashSecret(token), agentId, name, labels: {}, secretHash: hashSecret(`secret-${name}`), now: clock() });
      return agentId;
    },
    async backUp(planId, artifacts, options = {}) {
      const { job } = jobs.requestBackup(planId, 'manual');
      const agentId = job.agentId;
      jobs.onStarted(agentId, { jobId: job.id });
      let sentChunks = 0;
      for (const [step, artifact] of artifacts.entries()) {
        const uploadId = randomUUID();
        jobs.onArtifactBegin(agentId, { jobId: job.id, uploadId, step, kind: 'files', name: artifact.name, ...(options.keys ? { keyCheck: options.keys.keyCheck } : {}) });
        const chunker = new ContentDefinedChunker();
        const pieces = [...chunker.push(artifact.content), ...chunker.finish()];
        const list = new ChunkListDigest();
        for (const piece of pieces) {
          const chunk = encodeChunk(piece, { level: 3, keys: options.keys ?? null });
          list.add(chunk);
          const from = sent.length;
          jobs.onChunksOffer(agentId, { uploadId, chunks: [{ id: chunk.id, size: chunk.size }] });
          const answer = await answerFor(uploadId, chunk.id, from);
          if (answer === 'upload.failed') throw new Error(JSON.stringify(sent.at(-1)));
          if (answer === 'want') {
            jobs.onFrame(agentId, encodeFrame(FrameKind.Upload, uploadId, chunk.id, chunk.stored));
            sentChunks++;
          }
        }
        const metadata: ArtifactMetadata = { kind: 'files', paths: [`/srv/${artifact.name}`], entries: 1, files: 1, directories: 0, symlinks: 0, fileBytes: artifact.content.length };
        const sha256 = list.digest();
        await jobs.onArtifactEnd(agentId, { jobId: job.id, uploadId, size: artifact.content.length, sha256, chunks: pieces.length, metadata });
        const failed = sent.find((m) => m.type === 'upload.failed' && m.payload.uploadId === uploadId);
        if (failed) throw new Error(`upload failed: ${JSON.stringify(failed.payload)}`);
      }
      await jobs.onFinished(agentId, { jobId: job.id, ok: true, artifacts: artifacts.length });
      const done = catalog.job(job.id)!;
      if (done.status !== 'succeeded' || !done.snapshotId) throw new Error(`backup ${job.id} ${done.status}: ${done.errorMessage}`);
      return { snapshotId: done.snapshotId, sent: sentChunks };
    },
  };
}

/** What a test of the server's store works on: a catalog, a file store, and a driver backing up into both. */
export interface DriverFixture {
  readonly catalog: Catalog;
  readonly backend: FsBackend;
  readonly driver: BackupDriver;
}

/**
 * A fresh catalog, file store and driver for each test of the calling file, in a temp dir removed after it: agent
 * web-1 enrolled, and a plan with one files step for each id. Its fields change from test to test: read them in
 * a hook or a test, never once at the top of the file.
 */
export function backupDriverPerTest(planIds: readonly string[], clock: () => number): DriverFixture {
  let dir = '';
  let current: DriverFixture | null = null;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lifeboat-server-test-'));
    const catalog = new Catalog(openCatalogDb(join(dir, 'catalog.db')));
    const backend = new FsBackend(join(dir, 'store'));
    const driver = backupDriver(catalog, backend, clock);
    // As a repository's owner must before the first backup (these tests' chunks carry keys of their own, if any).
    await driver.encryption.decline();
    driver.enroll('web-1');
    catalog.applyPlans(planIds.map((id) => Plan.parse({ id, agent: 'web-1', steps: [{ files: { paths: [`/srv/${id}`] } }] })), clock());
    current = { catalog, backend, driver };
  });
  afterEach(async () => {
    current?.catalog.close();
    current = null;
    await rm(dir, { recursive: true, force: true });
  });
  const now = (): DriverFixture => {
    if (!current) throw new Error('the backup driver fixture is read outside a test');
    return current;
  };
  return {
    get catalog() {
      return now().catalog;
    },
    get backend() {
      return now().backend;
    },
    get driver() {
      return now().driver;
    },
  };
}

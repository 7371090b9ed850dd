import { randomUUID } from 'node:crypto';
import {
  ChunkListDigest,
  ContentDefinedChunker,
  createLogger,
  encodeChunk,
  encodeFrame,
  FrameKind,
  type ArtifactMetadata,
  type ChunkKeys,
  type StoreBackend,
} from '@lifeboat/shared';
import { hashSecret } from './auth.js';
import type { Catalog } from './catalog/catalog.js';
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

  const answerFor = async (uploadId: string, chunkId: string, from: number): Promise<string> => {
    for (let i = 0; i < 1000; i++) {
      const answer = sent.slice(from).find((m) => m.payload.uploadId === uploadId && m.payload.chunkId === chunkId && ['chunk.have', 'chunk.want', 'upload.failed'].includes(m.type));
      if (answer) return answer.type;
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
          list.add(chunk.id, chunk.size);
          const from = sent.length;
          jobs.onChunkOffer(agentId, { uploadId, chunkId: chunk.id, size: chunk.size });
          const answer = await answerFor(uploadId, chunk.id, from);
          if (answer === 'upload.failed') throw new Error(JSON.stringify(sent.at(-1)));
          if (answer === 'chunk.want') {
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

import {
  chunkListDigest,
  decodeFrame,
  encodeChunk,
  encodeFrame,
  FrameKind,
  type AgentMessages,
  type ArtifactForRestore,
  type ArtifactMetadata,
  type PayloadOf,
} from '@lifeboat/shared';
import type { ServerLink, TransferHandler } from '../link.js';
import type { BackupStream } from '../sources/source.js';

/**
 * A ServerLink that serves chunks from memory, as the server would from its store: artifacts are made by a
 * source's real backup, cut into chunks and encoded (chunk-codec) into a Map; a `chunk.request` is answered
 * with binary download frames (or `chunk.missing`), which go through the frame codec as on the socket.
 * For drill and restore tests; not part of the build (*.suite.ts).
 */
export class MemoryChunkServer implements ServerLink {
  readonly chunks = new Map<string, Buffer>();
  /** Every message the agent sent but chunk requests (job.started, job.finished…), in order. */
  readonly sent: { type: string; payload: unknown }[] = [];
  /** Every chunk id requested, in order. */
  readonly requested: string[] = [];
  /** Runs before a request is served; a promise that never settles holds the download there. */
  beforeServe: ((chunkIds: readonly string[]) => void | Promise<void>) | null = null;
  private readonly transfers = new Map<string, TransferHandler>();

  constructor(private readonly chunkBytes = 64 * 1024) {}

  send<K extends keyof typeof AgentMessages & string>(type: K, payload: PayloadOf<typeof AgentMessages, K>): void {
    if (type !== 'chunk.request') {
      this.sent.push({ type, payload });
      return;
    }
    const request = payload as PayloadOf<typeof AgentMessages, 'chunk.request'>;
    this.requested.push(...request.chunkIds);
    void (async () => {
      await this.beforeServe?.(request.chunkIds);
      for (const chunkId of request.chunkIds) {
        // Asynchronously, as frames arrive from a socket.
        await new Promise((resolve) => setImmediate(resolve));
        const handler = this.transfers.get(request.transferId);
        const stored = this.chunks.get(chunkId);
        if (!stored) {
          handler?.onMessage?.({
            type: 'chunk.missing',
            payload: { jobId: request.jobId, transferId: request.transferId, chunkId, error: { code: 'not_found', message: 'the store has no such chunk' } },
          });
          continue;
        }
        const decoded = decodeFrame(encodeFrame(FrameKind.Download, request.transferId, chunkId, Buffer.from(stored)));
        if (decoded.ok) handler?.onFrame?.(decoded.frame.chunkId, decoded.frame.data);
      }
    })();
  }

  sendBinary(): Promise<void> {
    return Promise.reject(new Error('the memory chunk server takes no uploads'));
  }

  subscribe(transferId: string, handler: TransferHandler): () => void {
    this.transfers.set(transferId, handler);
    return () => {
      if (this.transfers.get(transferId) === handler) this.transfers.delete(transferId);
    };
  }

  /** Stores what a source's backup produces, as the server records an artifact. */
  async store(backup: BackupStream, step: number): Promise<ArtifactForRestore> {
    const chunks: ArtifactForRestore['chunks'] = [];
    let size = 0;
    let pending = Buffer.alloc(0);
    const cut = (plain: Buffer) => {
      const encoded = encodeChunk(plain, { level: 3 });
      this.chunks.set(encoded.id, Buffer.from(encoded.stored));
      chunks.push({ id: encoded.id, size: encoded.size });
    };
    for await (const piece of backup.stream as AsyncIterable<Buffer>) {
      size += piece.length;
      pending = Buffer.concat([pending, piece]);
      while (pending.length >= this.chunkBytes) {
        cut(pending.subarray(0, this.chunkBytes));
        pending = pending.subarray(this.chunkBytes);
      }
    }
    if (pending.length > 0) cut(pending);
    const metadata: ArtifactMetadata = await backup.metadata;
    return { artifactId: `art_test${step}`, step, kind: backup.kind, name: backup.name, size, sha256: chunkListDigest(chunks), metadata, chunks };
  }

  /** Flips one byte of a stored chunk's payload, as damage in the store would. */
  damage(chunkId: string): void {
    const stored = this.chunks.get(chunkId);
    if (!stored) throw new Error(`no chunk ${chunkId}`);
    const at = stored.length - 1;
    stored[at] = stored[at]! ^ 0xff;
  }
}

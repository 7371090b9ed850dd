import { createHash } from 'node:crypto';
import { encodeFrameHeader, FrameKind, LifeboatError, newTransferId, UPLOAD_WINDOW, type ArtifactMetadata } from '@lifeboat/shared';
import type { ServerLink, TransferMessage } from './link.js';
import type { BackupStream, JobContext } from './sources/source.js';

/** Fixed-size chunks for now; content-defined chunking replaces this cutter without changing the protocol. */
export const CHUNK_BYTES = 1024 * 1024;

export interface UploadResult {
  artifactId: string;
  size: number;
  sha256: string;
  metadata: ArtifactMetadata;
}

/**
 * Streams one artifact to the server: cuts it into chunks, sends each with its SHA-256 id, and never has more
 * than UPLOAD_WINDOW chunks unacknowledged — the server acknowledges a chunk only once it is durable, so a slow
 * store slows the source down instead of filling the agent's memory.
 */
export async function uploadArtifact(link: ServerLink, step: number, artifact: BackupStream, ctx: JobContext): Promise<UploadResult> {
  const uploadId = newTransferId();
  const whole = createHash('sha256');
  let size = 0;
  let chunks = 0;
  let unacked = 0;
  let failure: LifeboatError | null = null;
  let wake: (() => void) | null = null;
  let artifactId: string | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };

  const unsubscribe = link.subscribe(uploadId, {
    onMessage(msg: TransferMessage) {
      if (msg.type === 'chunk.ack') unacked--;
      else if (msg.type === 'upload.failed') failure = new LifeboatError(msg.payload.error.code, msg.payload.error.message);
      else if (msg.type === 'artifact.stored') artifactId = msg.payload.artifactId;
      notify();
    },
  });
  const onAbort = () => notify();
  ctx.signal.addEventListener('abort', onAbort);
  const check = () => {
    if (failure) throw failure;
    if (ctx.signal.aborted) throw abortError(ctx.signal);
  };
  const waitUntil = async (done: () => boolean) => {
    while (!done()) {
      check();
      await new Promise<void>((resolve) => (wake = resolve));
    }
    check();
  };

  const sendChunk = async (data: Buffer) => {
    await waitUntil(() => unacked < UPLOAD_WINDOW);
    const id = createHash('sha256').update(data).digest('hex');
    whole.update(data);
    size += data.length;
    chunks++;
    unacked++;
    await link.sendBinary(encodeFrameHeader(FrameKind.Upload, uploadId, id), data);
    ctx.progress('uploading', size);
  };

  link.send('artifact.begin', { jobId: ctx.jobId, uploadId, step, kind: artifact.kind, name: artifact.name });
  try {
    const pending: Buffer[] = [];
    let pendingBytes = 0;
    for await (const piece of artifact.stream as AsyncIterable<Buffer>) {
      check();
      pending.push(piece);
      pendingBytes += piece.length;
      while (pendingBytes >= CHUNK_BYTES) {
        const joined = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
        pending.length = 0;
        await sendChunk(joined.subarray(0, CHUNK_BYTES));
        const rest = joined.subarray(CHUNK_BYTES);
        pendingBytes = rest.length;
        if (rest.length) pending.push(rest);
      }
    }
    if (pendingBytes > 0) await sendChunk(pending.length === 1 ? pending[0]! : Buffer.concat(pending));
    // The source's own verdict (exit code, signal, truncation) decides, not the stream having ended.
    const metadata = await artifact.metadata;
    const sha256 = whole.digest('hex');
    link.send('artifact.end', { jobId: ctx.jobId, uploadId, size, sha256, chunks, metadata });
    await waitUntil(() => artifactId !== null);
    return { artifactId: artifactId!, size, sha256, metadata };
  } catch (err) {
    artifact.stream.destroy();
    const reason = failure ?? (await sourceVerdict(artifact.metadata, err));
    if (!failure) link.send('artifact.abort', { jobId: ctx.jobId, uploadId, reason: reason instanceof Error ? reason.message : String(reason) });
    throw reason;
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    unsubscribe();
  }
}

export function abortError(signal: AbortSignal): LifeboatError {
  const reason = signal.reason;
  if (reason instanceof LifeboatError) return reason;
  return new LifeboatError('cancelled', typeof reason === 'string' ? reason : 'the job was cancelled');
}

/** When the stream broke, the source usually knows why (a dump's stderr, a missing file): prefer its error. */
async function sourceVerdict(metadata: Promise<unknown>, streamError: unknown): Promise<unknown> {
  const timeout = new Promise<unknown>((resolve) => setTimeout(() => resolve(streamError), 2000).unref());
  const verdict = metadata.then(
    () => streamError,
    (err: unknown) => (err instanceof LifeboatError ? err : streamError),
  );
  return Promise.race([verdict, timeout]);
}

import {
  canFreeNow,
  ChunkListDigest,
  ContentDefinedChunker,
  encodeFrame,
  frameInHeadroom,
  FrameKind,
  GarbageMeter,
  LifeboatError,
  MAX_CHUNK_QUERY,
  newTransferId,
  UPLOAD_WINDOW,
  UPLOAD_WINDOW_BYTES,
  type ArtifactMetadata,
  type ChunkRef,
  type ChunkUse,
  usedBytes,
  type RepositoryKeys,
  type EncodedChunk,
} from '@lifeboat/shared';
import { acquireCodec } from './codec-pool.js';
import type { ServerLink, TransferMessage } from './link.js';
import type { BackupStream, JobContext, StreamPiece } from './sources/source.js';

export interface UploadOptions {
  /** zstd level for chunks (0: store uncompressed). */
  compressionLevel: number;
  /** With encryption on: the repository keys (chunk ids become HMACs, payloads AES-256-GCM). */
  keys: RepositoryKeys | null;
}

export const DEFAULT_UPLOAD_OPTIONS: UploadOptions = { compressionLevel: 3, keys: null };

/**
 * Chunks being encoded at once, by count and by plain bytes (one may always be): enough to keep the codec
 * threads busy while the main thread reads and cuts the next ones, few enough to bound memory.
 */
const ENCODE_AHEAD = 8;
const ENCODE_AHEAD_BYTES = 4 * 1024 * 1024;

export interface UploadResult {
  artifactId: string;
  size: number;
  /** Bytes that actually travelled (stored form of the chunks the store lacked). */
  sentBytes: number;
  sentChunks: number;
  chunks: number;
  /** The digest of the chunk list (chunkListDigest). */
  sha256: string;
  metadata: ArtifactMetadata;
  /** What the source adds to the job's summary (the files read and reused). */
  note?: string;
}

/** A chunk as offered: encoded, ready to send if the store lacks it. */
interface OfferedChunk {
  id: string;
  size: number;
  stored: Buffer;
}

interface Offered {
  chunk: OfferedChunk;
  /** Offers of it not yet settled (answered "have", or sent and acknowledged). */
  count: number;
  /** Offers of it not yet answered, and frames of it being written: both need its bytes. */
  unanswered: number;
  sending: number;
  /** Its bytes went back to the codec thread; a repeat offer brings a fresh copy. */
  discarded: boolean;
}

/**
 * Streams one artifact to the server: cuts it into content-defined chunks, offers each by id, and sends only
 * the ones the store lacks. At most UPLOAD_WINDOW offers are unsettled at any time — the server settles an
 * offer by answering "have" or by acknowledging the uploaded chunk once it is packed (its pack is sealed, and so
 * durable, before the artifact counts as stored) — so a slow store slows the source down instead of filling the
 * agent's memory, and a retry after a cut connection sends only what never became durable. Chunks the files
 * cache reused go as `chunks.reused`, unasked.
 */
export async function uploadArtifact(
  link: ServerLink,
  step: number,
  artifact: BackupStream,
  ctx: JobContext,
  options: UploadOptions = DEFAULT_UPLOAD_OPTIONS,
): Promise<UploadResult> {
  const uploadId = newTransferId();
  const listDigest = new ChunkListDigest();
  const chunker = new ContentDefinedChunker();
  let size = 0;
  let chunks = 0;
  let sentBytes = 0;
  let sentChunks = 0;
  let unsettled = 0;
  /**
   * Offered chunks not yet settled, by id (a chunk can repeat within the window): `unanswered` offers and
   * `sending` frames still need its bytes; once neither does, they go back to the codec thread (`discarded`).
   */
  const offered = new Map<string, Offered>();
  let failure: LifeboatError | null = null;
  let artifactId: string | null = null;
  let wake: (() => void) | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  let unsettledBytes = 0;
  const release = (id: string) => {
    const entry = offered.get(id);
    if (entry) {
      unsettledBytes -= entry.chunk.size;
      if (--entry.count === 0) offered.delete(id);
    }
    unsettled--;
  };

  /**
   * A chunk's bytes leave this thread once no answer or frame still needs them: moved (not freed by a later
   * collection), they stop counting toward V8's next full collection at once, as chunks waiting for their
   * pack's acknowledgement did (bench/RESULTS.md).
   */
  const discardIfDone = (entry: Offered) => {
    if (entry.unanswered > 0 || entry.sending > 0 || entry.discarded) return;
    entry.discarded = true;
    codec.discard(entry.chunk.stored);
  };

  /** The server holds a chunk already. */
  const had = (chunkId: string) => {
    const entry = offered.get(chunkId);
    release(chunkId);
    if (!entry) return;
    entry.unanswered--;
    discardIfDone(entry);
  };

  /** A chunk the server asked for, as the next binary frame. */
  const send = (chunkId: string) => {
    const entry = offered.get(chunkId);
    if (!entry || entry.discarded) {
      failure ??= new LifeboatError('protocol', `the server asked for chunk ${chunkId}, which was not offered${entry ? ' again' : ''}`);
      return;
    }
    entry.unanswered--;
    entry.sending++;
    sentBytes += entry.chunk.stored.length;
    sentChunks++;
    // Encoded with headroom for the frame header: the frame is the same memory, no copy.
    const frame = frameInHeadroom(FrameKind.Upload, uploadId, entry.chunk.id, entry.chunk.stored) ?? encodeFrame(FrameKind.Upload, uploadId, entry.chunk.id, entry.chunk.stored);
    link.sendBinary(frame).then(
      () => {
        // Written to the socket: the frame's bytes are the kernel's now.
        entry.sending--;
        discardIfDone(entry);
      },
      (err: Error) => {
        entry.sending--;
        failure = new LifeboatError('upload_failed', `sending a chunk failed: ${err.message}`);
        notify();
      },
    );
  };

  const unsubscribe = link.subscribe(uploadId, {
    onMessage(msg: TransferMessage) {
      switch (msg.type) {
        case 'chunks.answer':
          for (const chunkId of msg.payload.have) had(chunkId);
          for (const chunkId of msg.payload.want) send(chunkId);
          break;
        case 'chunks.ack':
          for (const chunkId of msg.payload.chunkIds) release(chunkId);
          break;
        case 'upload.failed':
          failure = new LifeboatError(msg.payload.error.code, msg.payload.error.message);
          break;
        case 'artifact.stored':
          artifactId = msg.payload.artifactId;
          break;
        default:
          break;
      }
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

  const codec = acquireCodec();
  /** Chunks being encoded, in stream order, with their plain sizes: a few at once keep the worker threads busy. */
  const encoding: { chunk: Promise<EncodedChunk>; length: number }[] = [];
  let encodingBytes = 0;
  const nextEncoded = async () => {
    const next = encoding.shift()!;
    encodingBytes -= next.length;
    return await next.chunk;
  };
  /** The chunks of the segment being read (files source), for its segment end. */
  let segmentChunks: Promise<ChunkRef>[] = [];
  const cut = async (plain: Buffer) => {
    // Read before encoding: the buffer moves to a worker thread and is empty here after.
    const length = plain.length;
    size += length;
    chunks++;
    const pending = codec.encode(plain, options.compressionLevel, options.keys);
    pending.catch(() => undefined);
    encoding.push({ chunk: pending, length });
    encodingBytes += length;
    if (artifact.pieces) {
      const ref = pending.then((c) => ({ id: c.id, size: c.size }));
      ref.catch(() => undefined);
      segmentChunks.push(ref);
    }
    while (encoding.length >= ENCODE_AHEAD || (encoding.length > 1 && encodingBytes > ENCODE_AHEAD_BYTES)) await offer(await nextEncoded());
  };
  const take = async (piece: StreamPiece) => {
    if (Buffer.isBuffer(piece)) {
      for (const plain of chunker.push(piece)) await cut(plain);
      return;
    }
    if (piece.type === 'segment-end') {
      for (const plain of chunker.cut()) await cut(plain);
      const segment = Promise.all(segmentChunks);
      segment.catch(() => undefined);
      piece.onChunks?.(segment);
      segmentChunks = [];
      return;
    }
    // Reused chunks follow a segment end: the chunker is empty, and they go in stream order.
    while (encoding.length) await offer(await nextEncoded());
    for (const ref of piece.chunks) {
      size += usedBytes(ref);
      chunks++;
      listDigest.add(ref);
      reused.push(ref);
      if (reused.length >= MAX_CHUNK_QUERY) sendReused();
    }
    ctx.progress('uploading', size);
  };

  /**
   * Chunks the files cache reused, which the server confirmed it holds (chunks.query): gathered and sent in
   * batches with nothing to wait for, ahead of the next offer so the server sees the artifact in order.
   */
  let reused: ChunkUse[] = [];
  const sendReused = () => {
    if (reused.length === 0) return;
    // Offers made before these chunks go first: the server takes the artifact's chunks in the order they come.
    sendOffers();
    link.send('chunks.reused', { uploadId, chunks: reused });
    reused = [];
  };

  /**
   * Offers go out together: those made in one turn of the event loop (the chunks the codec threads finished
   * meanwhile) in one chunks.offer, not one message each (with a parse at both ends, and an answer for each).
   */
  let offers: ChunkRef[] = [];
  const sendOffers = () => {
    if (offers.length === 0) return;
    link.send('chunks.offer', { uploadId, chunks: offers });
    offers = [];
  };

  const garbage = new GarbageMeter(4 * 1024 * 1024, 32 * 1024 * 1024);
  const offer = async (chunk: OfferedChunk) => {
    sendReused();
    // Where node frees chunks as soon as they are done with (the plain one in the codec thread, the stored one
    // once settled), they are no garbage: nothing to collect for them.
    if (!canFreeNow()) garbage.add(chunk.size + chunk.stored.length);
    listDigest.add(chunk);
    // A window by count and by bytes: one chunk may always go, however large.
    await waitUntil(() => unsettled === 0 || (unsettled < UPLOAD_WINDOW && unsettledBytes + chunk.size <= UPLOAD_WINDOW_BYTES));
    unsettled++;
    unsettledBytes += chunk.size;
    const entry = offered.get(chunk.id);
    if (!entry) offered.set(chunk.id, { chunk, count: 1, unanswered: 1, sending: 0, discarded: false });
    else {
      entry.count++;
      entry.unanswered++;
      // Its earlier bytes went back to the codec thread: this copy may be asked for.
      if (entry.discarded) Object.assign(entry, { chunk, discarded: false });
    }
    offers.push({ id: chunk.id, size: chunk.size });
    if (offers.length === 1) setImmediate(sendOffers);
    ctx.progress('uploading', size);
  };

  link.send('artifact.begin', { jobId: ctx.jobId, uploadId, step, kind: artifact.kind, name: artifact.name, ...(options.keys ? { keyCheck: options.keys.keyCheck } : {}) });
  try {
    for await (const piece of artifact.pieces ?? (artifact.stream as AsyncIterable<Buffer>)) {
      check();
      await take(piece);
    }
    for (const plain of chunker.finish()) await cut(plain);
    while (encoding.length) await offer(await nextEncoded());
    sendReused();
    sendOffers();
    // The source's own verdict (exit code, signal, truncation) decides, not the stream having ended.
    const metadata = await artifact.metadata;
    await waitUntil(() => unsettled === 0);
    const sha256 = listDigest.digest();
    link.send('artifact.end', { jobId: ctx.jobId, uploadId, size, sha256, chunks, metadata });
    await waitUntil(() => artifactId !== null);
    const note = await artifact.settle?.(true);
    return { artifactId: artifactId!, size, sentBytes, sentChunks, chunks, sha256, metadata, ...(note ? { note } : {}) };
  } catch (err) {
    // Offers still queued would name an upload the server is about to drop.
    offers = [];
    if (artifact.pieces) await (artifact.pieces as AsyncGenerator<StreamPiece>).return?.(undefined).catch(() => undefined);
    else artifact.stream.destroy();
    await artifact.settle?.(false).catch(() => undefined);
    const reason = failure ?? (await sourceVerdict(artifact.metadata, err));
    if (!failure) link.send('artifact.abort', { jobId: ctx.jobId, uploadId, reason: reason instanceof Error ? reason.message : String(reason) });
    throw reason;
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    unsubscribe();
    codec.release();
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

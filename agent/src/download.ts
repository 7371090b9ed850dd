import { Readable } from 'node:stream';
import { chunkListDigest, usedPart, DOWNLOAD_WINDOW, DOWNLOAD_WINDOW_BYTES, GarbageMeter, LifeboatError, newTransferId, type ArtifactForRestore, type ChunkKeys } from '@lifeboat/shared';
import { acquireCodec } from './codec-pool.js';
import type { ServerLink, TransferMessage } from './link.js';
import type { JobContext } from './sources/source.js';

/** Streams whose chunks are the reader's once read (memory of their own, never handed again): it may move them. */
const ownedChunkStreams = new WeakSet<Readable>();

export function handsOwnedChunks(stream: Readable): boolean {
  return ownedChunkStreams.has(stream);
}

/** A slice of a chunk handed at the chunk's last use, and the whole chunk it is a view of (the reader's too). */
const slicedFrom = new WeakMap<Buffer, Buffer>();

/** What the reader of a handsOwnedChunks stream may move once done with `piece`: the whole chunk a slice is part of. */
export function wholeChunkOf(piece: Buffer): Buffer {
  return slicedFrom.get(piece) ?? piece;
}

/**
 * An artifact's bytes fetched chunk by chunk: at most DOWNLOAD_WINDOW chunks requested ahead, each decoded and
 * checked on arrival (authentication tag, length, id) by the codec threads, so the main thread is left to write
 * the restored files, and emitted in order. The chunk list itself is checked against the recorded digest before
 * anything is asked for, and the total size before the stream ends. The consumer's pace (backpressure) decides
 * how fast chunks are requested.
 */
export function downloadArtifact(link: ServerLink, artifact: ArtifactForRestore, ctx: JobContext, keys: ChunkKeys | null = null): Readable {
  const transferId = newTransferId();
  const chunks = artifact.chunks;
  const sizes = new Map(chunks.map((c) => [c.id, c.size]));
  const garbage = new GarbageMeter(8 * 1024 * 1024);
  const codec = acquireCodec();
  /**
   * Chunks requested and not yet emitted for every use: `uses` counts the list entries requested so far that it
   * still serves (an artifact may use one chunk several times, its slices often close together), so a chunk is
   * fetched once while an entry within the window still needs it. `data` is null until it has arrived, decoded.
   */
  const held = new Map<string, { data: Buffer | null; uses: number }>();
  /** The plain sizes of the chunks in `held`: what the window bounds. */
  let heldBytes = 0;
  let nextToRequest = 0;
  let nextToEmit = 0;
  let emittedBytes = 0;
  let wantMore = false;
  let ended = false;

  const stream = new Readable({
    highWaterMark: 1,
    read() {
      wantMore = true;
      // Not within read(): a chunk pushed there is joined (copied) to the one read() is about to return.
      queueMicrotask(pump);
    },
    destroy(err, callback) {
      unsubscribe();
      codec.release();
      ctx.signal.removeEventListener('abort', onAbort);
      callback(err);
    },
  });

  ownedChunkStreams.add(stream);
  // The consumer sees a failure by reading (an errored stream rejects its iteration, and a pipeline's): this only
  // keeps one that comes before it reads (the chunk list is checked on the next tick, while the restore still
  // prepares its target) from being an uncaught exception that stops the agent.
  stream.on('error', () => {});
  const fail = (err: LifeboatError) => {
    if (!stream.destroyed) stream.destroy(err);
  };

  const pump = () => {
    if (stream.destroyed || ended) return;
    while (wantMore && nextToEmit < chunks.length) {
      if (nextToEmit === nextToRequest) break;
      const ref = chunks[nextToEmit]!;
      const entry = held.get(ref.id)!;
      if (!entry.data) break;
      const last = --entry.uses === 0;
      if (last) held.delete(ref.id);
      nextToEmit++;
      const used = usedPart(entry.data, ref);
      emittedBytes += used.length;
      ctx.progress('restoring', emittedBytes, artifact.size);
      // The consumer may move what it is given once done with it (extract.ts): a chunk the artifact holds again
      // later is handed as a copy until its last use, and then the whole chunk is the consumer's.
      if (last) {
        heldBytes -= entry.data.length;
        if (used !== entry.data) slicedFrom.set(used, entry.data);
      }
      wantMore = stream.push(last ? used : Buffer.from(used));
    }
    if (nextToEmit === chunks.length) {
      if (emittedBytes !== artifact.size) {
        return fail(new LifeboatError('integrity', `artifact ${artifact.name}: the restored stream holds ${emittedBytes} bytes where ${artifact.size} were recorded at backup`));
      }
      ended = true;
      stream.push(null);
      unsubscribe();
      codec.release();
      return;
    }
    const ids: string[] = [];
    // A window by count and by bytes of the chunks held (they vary up to 8 MiB; a chunk used again counts once);
    // the next chunk may always be asked for.
    const adds = (id: string, size: number) => (held.has(id) ? 0 : size);
    while (nextToRequest < chunks.length && nextToRequest - nextToEmit < DOWNLOAD_WINDOW && (nextToRequest === nextToEmit || heldBytes + adds(chunks[nextToRequest]!.id, chunks[nextToRequest]!.size) <= DOWNLOAD_WINDOW_BYTES)) {
      const ref = chunks[nextToRequest++]!;
      const entry = held.get(ref.id);
      if (entry) entry.uses++;
      else {
        held.set(ref.id, { data: null, uses: 1 });
        heldBytes += ref.size;
        ids.push(ref.id);
      }
    }
    if (ids.length) link.send('chunk.request', { jobId: ctx.jobId, transferId, chunkIds: ids });
  };

  const unsubscribe = link.subscribe(transferId, {
    onFrame(chunkId, stored) {
      const size = sizes.get(chunkId);
      if (size === undefined) return fail(new LifeboatError('protocol', `the server sent chunk ${chunkId}, which artifact ${artifact.name} does not hold`));
      garbage.add(stored.length + size);
      codec.decode(stored, chunkId, size, keys).then(
        (data) => {
          if (stream.destroyed) return;
          const entry = held.get(chunkId);
          // A frame nobody waits for (sent twice) is dropped: what is emitted was checked all the same.
          if (!entry || entry.data) return;
          entry.data = data;
          pump();
        },
        (err: unknown) => {
          const reason = err instanceof LifeboatError ? err.message : String(err);
          // The codec names a chunk by a prefix of its id, or not at all (a damaged header): name it in full.
          const named = reason.includes(chunkId) ? reason : `${reason} (chunk ${chunkId})`;
          fail(new LifeboatError('integrity', `artifact ${artifact.name} (${artifact.kind}, step ${artifact.step}): ${named}`));
        },
      );
    },
    onMessage(msg: TransferMessage) {
      if (msg.type === 'chunk.missing') {
        fail(new LifeboatError(msg.payload.error.code, `artifact ${artifact.name}, chunk ${msg.payload.chunkId}: ${msg.payload.error.message}`));
      }
    },
  });
  if (chunkListDigest(chunks) !== artifact.sha256) {
    // Before any chunk is asked for: a list that is not the one the agent recorded restores nothing.
    process.nextTick(() => fail(new LifeboatError('integrity', `artifact ${artifact.name}: its chunk list does not match the digest recorded at backup`)));
  }
  const onAbort = () => fail(new LifeboatError('cancelled', String(ctx.signal.reason ?? 'the job was cancelled')));
  ctx.signal.addEventListener('abort', onAbort);
  return stream;
}

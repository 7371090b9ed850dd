import { createHash } from 'node:crypto';
import { ContentDefinedChunker, usedPart, type ChunkRef, type ChunkUse } from '@lifeboat/shared';
import type { StreamPiece } from '../sources/source.js';

/**
 * An archive's pieces taken as the upload takes them (agent/src/upload.ts), without a server: cut at every
 * segment end, each segment told its chunk ids, reused chunks (slices too) read back from `store`, where every
 * chunk cut is put. Returns the archive's bytes put back together and its chunk list, for tests of the files cache.
 */
export async function takeAsUpload(pieces: AsyncIterable<StreamPiece>, store: Map<string, Buffer>): Promise<{ bytes: Buffer; chunks: ChunkUse[] }> {
  const chunker = new ContentDefinedChunker();
  const parts: Buffer[] = [];
  const chunks: ChunkUse[] = [];
  let segment: ChunkRef[] = [];
  const take = (plain: Buffer) => {
    const ref = { id: createHash('sha256').update(plain).digest('hex'), size: plain.length };
    store.set(ref.id, plain);
    parts.push(plain);
    chunks.push(ref);
    segment.push(ref);
  };
  for await (const piece of pieces) {
    if (Buffer.isBuffer(piece)) chunker.push(piece).forEach(take);
    else if (piece.type === 'segment-end') {
      chunker.cut().forEach(take);
      piece.onChunks?.(Promise.resolve(segment));
      segment = [];
    } else {
      for (const ref of piece.chunks) {
        parts.push(usedPart(store.get(ref.id)!, ref));
        chunks.push(ref);
      }
    }
  }
  chunker.finish().forEach(take);
  return { bytes: Buffer.concat(parts), chunks };
}

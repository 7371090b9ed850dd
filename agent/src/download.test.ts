import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { chunkListDigest, encodeChunk, usedBytes, usedPart, type ArtifactForRestore, type ChunkUse } from '@lifeboat/shared';
import { downloadArtifact, handsOwnedChunks, wholeChunkOf } from './download.js';
import type { ServerLink, TransferHandler } from './link.js';
import { fakeJobContext } from './sources/test-context.suite.js';

/** A server that answers every chunk request with the stored chunks, in the order asked, all at once a moment later. */
function fakeServer(stored: Map<string, Buffer>, requested: string[] = []): ServerLink {
  let handler: TransferHandler | null = null;
  return {
    send(type, payload) {
      if (type !== 'chunk.request') return;
      const ids = (payload as { chunkIds: string[] }).chunkIds;
      requested.push(...ids);
      setTimeout(() => ids.forEach((id) => handler?.onFrame?.(id, Buffer.from(stored.get(id)!))), 10);
    },
    sendBinary: async () => {},
    subscribe(_id, h) {
      handler = h;
      return () => (handler = null);
    },
  };
}

/** A files artifact of these chunks, its size and digest as a backup records them. */
function artifactOf(chunks: ChunkUse[]): ArtifactForRestore {
  return {
    artifactId: 'art_1',
    step: 0,
    kind: 'files',
    name: '/srv',
    size: chunks.reduce((n, c) => n + usedBytes(c), 0),
    sha256: chunkListDigest(chunks),
    metadata: { kind: 'files', paths: ['/srv'], entries: 0, files: 0, directories: 0, symlinks: 0, fileBytes: 0 },
    chunks,
  };
}

describe('downloadArtifact', () => {
  it('hands a chunk the artifact holds again as a copy until its last use, so its reader may move what it read', async () => {
    const a = encodeChunk(randomBytes(30_000), { level: 0 });
    const b = encodeChunk(randomBytes(50_000), { level: 0 });
    const order = [a, b, a, a, b];
    const chunks = order.map((c) => ({ id: c.id, size: c.size }));
    const plain = new Map([a, b].map((c) => [c.id, c.stored.subarray(c.stored.length - c.size)]));
    const artifact = artifactOf(chunks);
    const stream = downloadArtifact(fakeServer(new Map([a, b].map((c) => [c.id, c.stored]))), artifact, fakeJobContext().ctx);
    expect(handsOwnedChunks(stream)).toBe(true);
    const read: Buffer[] = [];
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      read.push(Buffer.from(chunk));
      // As the restore does once node-tar has taken a chunk: its memory moves away (and reads as empty here).
      structuredClone(chunk.buffer, { transfer: [chunk.buffer as ArrayBuffer] });
    }
    expect(Buffer.concat(read).equals(Buffer.concat(order.map((c) => plain.get(c.id)!)))).toBe(true);
  });

  it('restores slices of chunks, fetching a chunk once for the uses close together', async () => {
    const a = encodeChunk(randomBytes(30_000), { level: 0 });
    const b = encodeChunk(randomBytes(50_000), { level: 0 });
    const chunks: ChunkUse[] = [
      { id: a.id, size: a.size, offset: 0, length: 1000 },
      { id: b.id, size: b.size },
      { id: a.id, size: a.size, offset: 1500, length: 28_500 },
      { id: b.id, size: b.size, offset: 49_999, length: 1 },
    ];
    const plain = new Map([a, b].map((c) => [c.id, c.stored.subarray(c.stored.length - c.size)]));
    const artifact = artifactOf(chunks);
    const requested: string[] = [];
    const stream = downloadArtifact(fakeServer(new Map([a, b].map((c) => [c.id, c.stored])), requested), artifact, fakeJobContext().ctx);
    const read: Buffer[] = [];
    const movable: number[] = [];
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      read.push(Buffer.from(chunk));
      // What the restore may move once done: at a chunk's last use, the whole chunk (a copy before).
      movable.push(wholeChunkOf(chunk).length);
      structuredClone(chunk.buffer, { transfer: [chunk.buffer as ArrayBuffer] });
    }
    expect(Buffer.concat(read).equals(Buffer.concat(chunks.map((c) => usedPart(plain.get(c.id)!, c))))).toBe(true);
    expect(requested).toEqual([a.id, b.id]);
    expect(movable).toEqual([1000, b.size, a.size, b.size]);
  });

  it('fails a list that is not the one recorded when it is read, even when reading starts late', async () => {
    const a = encodeChunk(randomBytes(30_000), { level: 0 });
    const artifact = { ...artifactOf([{ id: a.id, size: a.size }]), sha256: 'f'.repeat(64) };
    const stream = downloadArtifact(fakeServer(new Map([[a.id, a.stored]])), artifact, fakeJobContext().ctx);
    // The restore prepares its target first: the failure comes meanwhile, with nobody reading yet.
    await new Promise((resolve) => setTimeout(resolve, 30));
    const err = await (async () => {
      for await (const _ of stream as AsyncIterable<Buffer>) void _;
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'integrity', message: expect.stringMatching(/chunk list does not match the digest/) });
  });
});

import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { AgentMessages, decodeFrame, UPLOAD_WINDOW, type ArtifactMetadata } from '@lifeboat/shared';
import type { ServerLink, TransferHandler } from './link.js';
import type { BackupStream, StreamPiece } from './sources/source.js';
import { fakeJobContext } from './sources/test-context.suite.js';
import { uploadArtifact } from './upload.js';

/**
 * A server for one upload, in memory: it checks every message against the protocol's schema, holds the chunks
 * in `stored`, wants every chunk it does not hold yet, and acknowledges each uploaded one at once.
 */
function fakeServer(stored = new Set<string>()) {
  const messages: { type: string; payload: Record<string, unknown> }[] = [];
  const framed: string[] = [];
  let handler: TransferHandler | null = null;
  const reply = (type: string, payload: unknown) => setImmediate(() => handler?.onMessage?.({ type, payload } as never));
  const link: ServerLink = {
    send(type, payload) {
      const parsed = AgentMessages[type].parse(payload) as Record<string, unknown>;
      messages.push({ type, payload: parsed });
      if (type === 'chunks.offer') {
        const ids = (parsed.chunks as { id: string }[]).map((c) => c.id);
        reply('chunks.answer', { uploadId: parsed.uploadId, have: ids.filter((id) => stored.has(id)), want: ids.filter((id) => !stored.has(id)) });
      }
      if (type === 'artifact.end') reply('artifact.stored', { jobId: parsed.jobId, uploadId: parsed.uploadId, artifactId: 'art_test' });
    },
    async sendBinary(frame) {
      const decoded = decodeFrame(frame);
      if (!decoded.ok) throw new Error(decoded.error);
      framed.push(decoded.frame.chunkId);
      stored.add(decoded.frame.chunkId);
      reply('chunks.ack', { uploadId: decoded.frame.transferId, chunkIds: [decoded.frame.chunkId] });
    },
    subscribe(_id, h) {
      handler = h;
      return () => (handler = null);
    },
  };
  return { link, messages, framed, stored };
}

const metadata: ArtifactMetadata = { kind: 'files', paths: ['/srv'], entries: 1, files: 1, directories: 0, symlinks: 0, fileBytes: 0 };

/** An artifact of `count` small segments (a group of small files each): one chunk per segment. */
function segmented(count: number): BackupStream {
  async function* pieces(): AsyncGenerator<StreamPiece> {
    for (let i = 0; i < count; i++) {
      yield randomBytes(4096);
      yield { type: 'segment-end' };
    }
  }
  return { kind: 'files', name: '/srv', stream: Readable.from([]), pieces: pieces(), metadata: Promise.resolve(metadata) };
}

describe('uploadArtifact', () => {
  it('offers the chunks made in one turn together, in order, within the window, and sends each wanted one once', async () => {
    const server = fakeServer();
    const result = await uploadArtifact(server.link, 0, segmented(200), fakeJobContext().ctx);
    expect(result).toMatchObject({ artifactId: 'art_test', chunks: 200, sentChunks: 200, size: 200 * 4096 });
    const offers = server.messages.filter((m) => m.type === 'chunks.offer').map((m) => (m.payload.chunks as { id: string }[]).map((c) => c.id));
    expect(offers.flat()).toEqual(server.framed);
    expect(new Set(server.framed).size).toBe(200);
    expect(Math.max(...offers.map((o) => o.length))).toBeLessThanOrEqual(UPLOAD_WINDOW);
    // One message per chunk would be 200: chunks ready at once go as one offer.
    expect(offers.length).toBeLessThan(100);
  });

  it('sends nothing the store holds, and offers and reused chunks reach the server in stream order', async () => {
    const first = fakeServer();
    await uploadArtifact(first.link, 0, segmented(50), fakeJobContext().ctx);
    const again = fakeServer(new Set(first.stored));
    // Fresh random bytes: the same count of new chunks, and none of the old ones.
    const result = await uploadArtifact(again.link, 0, segmented(50), fakeJobContext().ctx);
    expect(result.sentChunks).toBe(50);
    const reusedFirst = fakeServer(new Set(first.stored));
    const reused = first.framed.slice(0, 10).map((id) => ({ id, size: 4096 }));
    async function* pieces(): AsyncGenerator<StreamPiece> {
      yield randomBytes(4096);
      yield { type: 'segment-end' };
      yield { type: 'reused', chunks: reused };
      yield randomBytes(4096);
      yield { type: 'segment-end' };
    }
    const mixed = await uploadArtifact(reusedFirst.link, 0, { kind: 'files', name: '/srv', stream: Readable.from([]), pieces: pieces(), metadata: Promise.resolve(metadata) }, fakeJobContext().ctx);
    expect(mixed).toMatchObject({ chunks: 12, sentChunks: 2 });
    const order = reusedFirst.messages.filter((m) => m.type !== 'artifact.begin').map((m) => m.type);
    expect(order).toEqual(['chunks.offer', 'chunks.reused', 'chunks.offer', 'artifact.end']);
  });

  describe("a chunk's bytes, given back once sent", () => {
    /**
     * A server that wants every offered chunk, as one does while an earlier copy of it is still on its way, and
     * acknowledges only once `ackAfter` frames arrived. `extraWant` asks once more, unoffered, after the first frame.
     */
    function slowAckServer(ackAfter: number, extraWant = false) {
      const frames: { id: string; bytes: number }[] = [];
      let handler: TransferHandler | null = null;
      const reply = (type: string, payload: unknown) => setImmediate(() => handler?.onMessage?.({ type, payload } as never));
      const link: ServerLink = {
        send(type, payload) {
          const parsed = AgentMessages[type].parse(payload) as Record<string, unknown>;
          if (type === 'chunks.offer') reply('chunks.answer', { uploadId: parsed.uploadId, have: [], want: (parsed.chunks as { id: string }[]).map((c) => c.id) });
          if (type === 'artifact.end') reply('artifact.stored', { jobId: parsed.jobId, uploadId: parsed.uploadId, artifactId: 'art_test' });
        },
        async sendBinary(frame) {
          const decoded = decodeFrame(frame);
          if (!decoded.ok) throw new Error(decoded.error);
          frames.push({ id: decoded.frame.chunkId, bytes: decoded.frame.data.length });
          if (extraWant && frames.length === 1) setTimeout(() => handler?.onMessage?.({ type: 'chunks.answer', payload: { uploadId: decoded.frame.transferId, have: [], want: [decoded.frame.chunkId] } } as never), 20);
          if (frames.length === ackAfter) reply('chunks.ack', { uploadId: decoded.frame.transferId, chunkIds: frames.map((f) => f.id) });
        },
        subscribe(_id, h) {
          handler = h;
          return () => (handler = null);
        },
      };
      return { link, frames };
    }

    /** The same bytes twice, the second offered only after the first was sent (and its bytes given back). */
    function twice(content: Buffer): BackupStream {
      async function* pieces(): AsyncGenerator<StreamPiece> {
        yield Buffer.from(content);
        yield { type: 'segment-end' };
        // Offers what is encoded (no reused chunks follow), then waits for the answer and the frame.
        yield { type: 'reused', chunks: [] };
        await new Promise((r) => setTimeout(r, 50));
        yield Buffer.from(content);
        yield { type: 'segment-end' };
      }
      return { kind: 'files', name: '/srv', stream: Readable.from([]), pieces: pieces(), metadata: Promise.resolve(metadata) };
    }

    it('sends a repeated chunk whole again when it is asked for again', async () => {
      const server = slowAckServer(2);
      const result = await uploadArtifact(server.link, 0, twice(randomBytes(8192)), fakeJobContext().ctx);
      expect(result).toMatchObject({ chunks: 2, sentChunks: 2 });
      expect(server.frames).toHaveLength(2);
      expect(server.frames[1]).toEqual(server.frames[0]);
      expect(server.frames[0]!.bytes).toBeGreaterThan(8192);
    });

    it('fails the upload, sending nothing, when asked once more for a chunk it already sent', async () => {
      const server = slowAckServer(99, true);
      await expect(uploadArtifact(server.link, 0, segmented(1), fakeJobContext().ctx)).rejects.toThrow(/asked for chunk [0-9a-f]{64}, which was not offered again/);
      expect(server.frames).toHaveLength(1);
    });
  });
});

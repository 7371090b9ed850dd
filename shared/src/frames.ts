import { MAX_STORED_CHUNK_BYTES } from './protocol.js';

/**
 * Binary frames carry chunk data on the same socket as the JSON control messages:
 *   byte 0       frame format version (1)
 *   byte 1       kind: 1 = upload chunk (agent → server), 2 = download chunk (server → agent)
 *   bytes 2-17   transfer id (the upload's or the restore transfer's UUID, as 16 bytes)
 *   bytes 18-49  chunk id (SHA-256 of the plaintext, or its HMAC under encryption; 32 bytes)
 *   bytes 50-    the stored chunk (chunk-codec.ts: header, compressed and maybe encrypted payload)
 */
export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 50;
export enum FrameKind {
  Upload = 1,
  Download = 2,
}

export interface ChunkFrame {
  kind: FrameKind;
  transferId: string;
  chunkId: string;
  data: Buffer;
}

function uuidToBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new Error(`not a UUID: ${uuid}`);
  return Buffer.from(hex, 'hex');
}

function bytesToUuid(bytes: Buffer): string {
  const h = bytes.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Returns the header and the data separately so the data is never copied into a new buffer. */
export function encodeFrameHeader(kind: FrameKind, transferId: string, chunkId: string): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header[0] = FRAME_VERSION;
  header[1] = kind;
  uuidToBytes(transferId).copy(header, 2);
  Buffer.from(chunkId, 'hex').copy(header, 18);
  return header;
}

export function encodeFrame(kind: FrameKind, transferId: string, chunkId: string, data: Buffer): Buffer {
  return Buffer.concat([encodeFrameHeader(kind, transferId, chunkId), data]);
}

export type DecodedFrame = { ok: true; frame: ChunkFrame } | { ok: false; error: string };

export function decodeFrame(buf: Buffer): DecodedFrame {
  if (buf.length < FRAME_HEADER_BYTES) return { ok: false, error: `binary frame of ${buf.length} bytes is shorter than its header` };
  if (buf[0] !== FRAME_VERSION) return { ok: false, error: `binary frame version ${buf[0]} is not ${FRAME_VERSION}` };
  const kind = buf[1];
  if (kind !== FrameKind.Upload && kind !== FrameKind.Download) return { ok: false, error: `unknown binary frame kind ${kind}` };
  const data = buf.subarray(FRAME_HEADER_BYTES);
  if (data.length > MAX_STORED_CHUNK_BYTES) return { ok: false, error: `chunk of ${data.length} bytes exceeds ${MAX_STORED_CHUNK_BYTES}` };
  return {
    ok: true,
    frame: { kind, transferId: bytesToUuid(buf.subarray(2, 18)), chunkId: buf.subarray(18, 50).toString('hex'), data },
  };
}

/**
 * The whole frame for a stored chunk that was encoded with FRAME_HEADER_BYTES of headroom in front of it
 * (chunk-codec's `headroom`): the header is written into that room, and nothing is copied.
 */
export function frameInHeadroom(kind: FrameKind, transferId: string, chunkId: string, stored: Buffer): Buffer | null {
  if (stored.byteOffset < FRAME_HEADER_BYTES) return null;
  const frame = Buffer.from(stored.buffer, stored.byteOffset - FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + stored.length);
  encodeFrameHeader(kind, transferId, chunkId).copy(frame, 0);
  return frame;
}

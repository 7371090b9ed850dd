import { z } from 'zod';
import { ErrorCodes } from './errors.js';
import { AbsolutePath, Labels, Sha256Hex } from './ids.js';
import { Plan } from './plan.js';

/**
 * The agent ⇄ server protocol. Control messages are JSON text frames in one envelope,
 * `{ v, id, type, payload }`, one catalog per direction; data travels in binary frames (frames.ts).
 * A message that fails to parse is answered with `error` and dropped, never thrown across the wire.
 */
export const PROTOCOL_VERSION = 1;

/** Chunks on the wire and in the store are at most this big; the socket's maxPayload follows from it. */
export const MAX_CHUNK_BYTES = 8 * 1024 * 1024;
/** Binary frame header (frames.ts) plus the largest chunk. */
export const MAX_FRAME_BYTES = MAX_CHUNK_BYTES + 64;
/** Chunks an agent may send before the server has acknowledged them as durable (flow control). */
export const UPLOAD_WINDOW = 8;
/** Chunks an agent may have requested and not yet received during a restore. */
export const DOWNLOAD_WINDOW = 8;

export const WireError = z.object({ code: z.enum(ErrorCodes), message: z.string() });
export type WireError = z.infer<typeof WireError>;

export const ToolInfo = z.object({ name: z.string(), version: z.string(), path: z.string() });
export type ToolInfo = z.infer<typeof ToolInfo>;

export const ChunkRef = z.object({ id: Sha256Hex, size: z.number().int().min(0).max(MAX_CHUNK_BYTES) });
export type ChunkRef = z.infer<typeof ChunkRef>;

/** What a files artifact records about the tree it archived. */
export const FilesMetadata = z.object({
  kind: z.literal('files'),
  paths: z.array(z.string()),
  entries: z.number().int(),
  files: z.number().int(),
  directories: z.number().int(),
  symlinks: z.number().int(),
  fileBytes: z.number().int(),
});
export const ArtifactMetadata = z.discriminatedUnion('kind', [FilesMetadata]);
export type ArtifactMetadata = z.infer<typeof ArtifactMetadata>;

export const ArtifactKind = z.enum(['files']);
export type ArtifactKind = z.infer<typeof ArtifactKind>;

/** An artifact as a restore needs it: the ordered chunks and what the whole stream must hash to. */
export const ArtifactForRestore = z.object({
  artifactId: z.string(),
  kind: ArtifactKind,
  name: z.string(),
  size: z.number().int().min(0),
  sha256: Sha256Hex,
  chunks: z.array(ChunkRef),
});
export type ArtifactForRestore = z.infer<typeof ArtifactForRestore>;

export const RestoreTarget = z.object({ kind: z.literal('dir'), path: AbsolutePath, force: z.boolean().default(false) });
export type RestoreTarget = z.infer<typeof RestoreTarget>;

function message<T extends string, P extends z.ZodType>(type: T, payload: P) {
  return z.object({ v: z.literal(PROTOCOL_VERSION), id: z.string().max(64), type: z.literal(type), payload });
}

// ── agent → server ────────────────────────────────────────────────────────────
export const AgentMessages = {
  hello: z.object({
    protocol: z.number().int(),
    agentVersion: z.string(),
    hostname: z.string(),
    platform: z.string(),
    tools: z.array(ToolInfo),
  }),
  'job.started': z.object({ jobId: z.string() }),
  'job.progress': z.object({
    jobId: z.string(),
    phase: z.string().max(200),
    bytes: z.number().int().min(0),
    totalBytes: z.number().int().min(0).optional(),
  }),
  'job.warning': z.object({ jobId: z.string(), message: z.string().max(4000) }),
  'artifact.begin': z.object({
    jobId: z.string(),
    uploadId: z.uuid(),
    step: z.number().int().min(0),
    kind: ArtifactKind,
    name: z.string().max(500),
  }),
  'artifact.end': z.object({
    jobId: z.string(),
    uploadId: z.uuid(),
    size: z.number().int().min(0),
    sha256: Sha256Hex,
    chunks: z.number().int().min(0),
    metadata: ArtifactMetadata,
  }),
  'artifact.abort': z.object({ jobId: z.string(), uploadId: z.uuid(), reason: z.string().max(4000) }),
  'chunk.request': z.object({ jobId: z.string(), transferId: z.uuid(), chunkIds: z.array(Sha256Hex).min(1).max(DOWNLOAD_WINDOW) }),
  'job.finished': z.object({
    jobId: z.string(),
    ok: z.boolean(),
    error: WireError.optional(),
    /** Human-readable outcome, e.g. the restore's summary. */
    summary: z.string().max(4000).optional(),
  }),
} as const;

// ── server → agent ────────────────────────────────────────────────────────────
export const ServerMessages = {
  welcome: z.object({
    protocol: z.number().int(),
    agentId: z.string(),
    name: z.string(),
    labels: Labels,
    serverTime: z.string(),
    plans: z.array(Plan),
  }),
  plans: z.object({ plans: z.array(Plan) }),
  'job.backup': z.object({ jobId: z.string(), plan: Plan }),
  'job.restore': z.object({
    jobId: z.string(),
    snapshotId: z.string(),
    target: RestoreTarget,
    /** Restore owners (uid/gid) as recorded; off for drills and when not running as root. */
    preserveOwner: z.boolean(),
    artifacts: z.array(ArtifactForRestore),
  }),
  'job.cancel': z.object({ jobId: z.string(), reason: z.string() }),
  'chunk.ack': z.object({ uploadId: z.uuid(), chunkId: Sha256Hex }),
  'artifact.stored': z.object({ jobId: z.string(), uploadId: z.uuid(), artifactId: z.string() }),
  'upload.failed': z.object({ jobId: z.string(), uploadId: z.uuid(), error: WireError }),
  'chunk.missing': z.object({ jobId: z.string(), transferId: z.uuid(), chunkId: Sha256Hex, error: WireError }),
  error: z.object({ inReplyTo: z.string().optional(), error: WireError }),
} as const;

type Catalog = Record<string, z.ZodType>;
export type MessageOf<C extends Catalog> = {
  [K in keyof C & string]: { v: typeof PROTOCOL_VERSION; id: string; type: K; payload: z.infer<C[K]> };
}[keyof C & string];
export type AgentMessage = MessageOf<typeof AgentMessages>;
export type ServerMessage = MessageOf<typeof ServerMessages>;
export type PayloadOf<C extends Catalog, K extends keyof C> = z.infer<C[K]>;

function envelopeUnion<C extends Catalog>(catalog: C) {
  const variants = Object.entries(catalog).map(([type, payload]) => message(type, payload));
  return z.discriminatedUnion('type', variants as unknown as [ReturnType<typeof message>, ...ReturnType<typeof message>[]]);
}

const AgentEnvelope = envelopeUnion(AgentMessages);
const ServerEnvelope = envelopeUnion(ServerMessages);

export type Decoded<M> = { ok: true; message: M } | { ok: false; error: string; id?: string };

function decode<M>(schema: z.ZodType, text: string): Decoded<M> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  const id = typeof raw === 'object' && raw !== null && typeof (raw as { id?: unknown }).id === 'string' ? (raw as { id: string }).id : undefined;
  const result = schema.safeParse(raw);
  if (!result.success) {
    const type = typeof raw === 'object' && raw !== null ? (raw as { type?: unknown }).type : undefined;
    const issues = result.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
      .join('; ');
    return { ok: false, error: `malformed ${typeof type === 'string' ? `"${type.slice(0, 40)}" ` : ''}message: ${issues}`, ...(id ? { id } : {}) };
  }
  return { ok: true, message: result.data as M };
}

export const decodeAgentMessage = (text: string) => decode<AgentMessage>(AgentEnvelope, text);
export const decodeServerMessage = (text: string) => decode<ServerMessage>(ServerEnvelope, text);

let counter = 0;
export function encodeMessage<C extends Catalog, K extends keyof C & string>(_catalog: C, type: K, payload: z.infer<C[K]>): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return JSON.stringify({ v: PROTOCOL_VERSION, id: `m${counter.toString(36)}`, type, payload });
}

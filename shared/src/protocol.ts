import { z } from 'zod';
import { ErrorCodes } from './errors.js';
import { AbsolutePath, DatabaseHost, DatabaseName, DatabaseUser, EnvName, Labels, Port, Sha256Hex } from './ids.js';
import { DrillCheck, Plan, RecipeNames } from './plan.js';
import { EncryptionSettings } from './keys.js';

/**
 * The agent ⇄ server protocol. Control messages are JSON text frames in one envelope,
 * `{ v, id, type, payload }`, one catalog per direction; data travels in binary frames (frames.ts).
 * A message that fails to parse is answered with `error` and dropped, never thrown across the wire.
 */
/**
 * 2: chunks.reused, and chunk ids from the content-only chunker (the store holds packs).
 * 3: offers, answers and acknowledgements in batches (chunks.offer, chunks.answer, chunks.ack).
 * 4: plans carry `compression` (an agent of 3 would refuse every plan it is sent, strict as plans are).
 * 5: chunk lists may use part of a chunk (ChunkUse: `offset`, `length`), which an agent of 4 could not restore.
 */
export const PROTOCOL_VERSION = 5;
/** Chunk ids per chunks.query. */
export const MAX_CHUNK_QUERY = 4096;

/** Chunks are at most this big in plaintext (chunker.ts: CHUNK_MAX); the socket's maxPayload follows from it. */
export const MAX_CHUNK_BYTES = 8 * 1024 * 1024;
/** A stored chunk may be a little larger than its plaintext (header, nonce, tag, an incompressible zstd frame). */
export const MAX_STORED_CHUNK_BYTES = MAX_CHUNK_BYTES + 64 * 1024;
/** Binary frame header (frames.ts) plus the largest stored chunk. */
export const MAX_FRAME_BYTES = MAX_STORED_CHUNK_BYTES + 64;
/**
 * Chunks an agent may have offered and not yet seen settled (the server answered "have", or acknowledged the
 * upload as durable): flow control, and the bound on what either side holds in memory.
 */
export const UPLOAD_WINDOW = 32;
/**
 * …and at most this many bytes of them (chunks vary from a few KiB, a group of small files, to 8 MiB: a count
 * alone bounds memory loosely, and many small chunks need many in flight to keep the link busy).
 */
export const UPLOAD_WINDOW_BYTES = 12 * 1024 * 1024;
/** Chunks an agent may have requested and not yet received during a restore. */
export const DOWNLOAD_WINDOW = 32;
/** …and at most this many bytes of them. */
export const DOWNLOAD_WINDOW_BYTES = 4 * 1024 * 1024;

export const WireError = z.object({ code: z.enum(ErrorCodes), message: z.string() });
export type WireError = z.infer<typeof WireError>;

export const ToolInfo = z.object({ name: z.string(), version: z.string(), path: z.string() });
export type ToolInfo = z.infer<typeof ToolInfo>;

export const ChunkRef = z.object({ id: Sha256Hex, size: z.number().int().min(0).max(MAX_CHUNK_BYTES) });
export type ChunkRef = z.infer<typeof ChunkRef>;

/**
 * A chunk as an artifact's list uses it: whole, or one slice of its plaintext (`offset`, `length`; `size` stays
 * the whole chunk's). Slices let a backup keep the unchanged files of a group of small files from the chunk that
 * stored them, and store only the changed ones anew (agent/src/archive/tar-writer.ts). A slice is always part
 * of its chunk, never all of it: a reader that knew no slices would then find the sizes not adding up, and refuse.
 */
export const ChunkUse = ChunkRef.extend({
  offset: z.number().int().min(0).max(MAX_CHUNK_BYTES).optional(),
  length: z.number().int().min(1).max(MAX_CHUNK_BYTES).optional(),
}).superRefine((c, ctx) => {
  if ((c.offset === undefined) !== (c.length === undefined)) ctx.addIssue({ code: 'custom', message: 'a slice of a chunk needs both offset and length' });
  else if (c.offset !== undefined && c.offset + c.length! > c.size) ctx.addIssue({ code: 'custom', message: `the slice ${c.offset}+${c.length} ends past the chunk's ${c.size} bytes` });
  else if (c.offset !== undefined && c.length === c.size) ctx.addIssue({ code: 'custom', message: 'a slice covering the whole chunk must be listed as the chunk' });
});
export type ChunkUse = z.infer<typeof ChunkUse>;

/** What a files artifact records about the tree it archived. */
export const FilesMetadata = z.object({
  kind: z.literal('files'),
  paths: z.array(z.string()),
  entries: z.number().int(),
  files: z.number().int(),
  directories: z.number().int(),
  symlinks: z.number().int(),
  fileBytes: z.number().int(),
  /**
   * The per-file manifest (one JSON line per entry: path, type, size, SHA-256, link target), stored as the
   * archive's last entry: its line count and its own SHA-256. Absent in backups made before it was recorded.
   */
  manifest: z.object({ entries: z.number().int().min(0), sha256: Sha256Hex }).optional(),
});

/** A table as recorded at backup time: exact rows in the dump's own snapshot, and optionally a content checksum. */
export const TableRecord = z.object({
  schema: z.string().optional(),
  name: z.string(),
  rows: z.number().int().min(0),
  checksum: z.string().optional(),
});
export type TableRecord = z.infer<typeof TableRecord>;

export const PostgresMetadata = z.object({
  kind: z.literal('postgres'),
  database: z.string(),
  serverVersion: z.string(),
  dumpVersion: z.string(),
  /** pg_dump's custom format, restored with pg_restore (never psql: DESIGN §11). */
  format: z.literal('custom'),
  tables: z.array(TableRecord),
  /** Roles that own objects or hold grants in the dump: they must exist before a restore. */
  roles: z.array(z.string()),
  extensions: z.array(z.object({ name: z.string(), version: z.string() })),
});

export const PostgresGlobalsMetadata = z.object({
  kind: z.literal('postgres-globals'),
  serverVersion: z.string(),
  roles: z.array(z.string()),
});

export const MysqlMetadata = z.object({
  kind: z.literal('mysql'),
  serverVersion: z.string(),
  dumpTool: z.string(),
  dumpVersion: z.string(),
  databases: z.array(z.object({ name: z.string(), tables: z.array(TableRecord) })),
});

export const SqliteMetadata = z.object({
  kind: z.literal('sqlite'),
  path: z.string(),
  sizeBytes: z.number().int(),
  tables: z.array(TableRecord),
  integrity: z.literal('ok'),
});

export const CommandMetadata = z.object({
  kind: z.literal('command'),
  name: z.string(),
  program: z.string(),
  exitCode: z.literal(0),
});

export const ArtifactMetadata = z.discriminatedUnion('kind', [FilesMetadata, PostgresMetadata, PostgresGlobalsMetadata, MysqlMetadata, SqliteMetadata, CommandMetadata]);
export type ArtifactMetadata = z.infer<typeof ArtifactMetadata>;
export type MetadataOf<K extends ArtifactKind> = Extract<ArtifactMetadata, { kind: K }>;

export const ArtifactKind = z.enum(['files', 'postgres', 'postgres-globals', 'mysql', 'sqlite', 'command']);
export type ArtifactKind = z.infer<typeof ArtifactKind>;

export const ChunkList = z.array(ChunkUse);

/** What is known of a stored artifact, wherever it is described: its place, kind, size, hash, metadata and chunks. */
export const artifactFields = {
  step: z.number().int().min(0),
  kind: ArtifactKind,
  name: z.string(),
  size: z.number().int().min(0),
  /**
   * SHA-256 of the ordered chunk list (chunkListDigest): with every chunk's bytes checked against its id on
   * restore, it pins every byte of the stream, yet it can be computed without reading what a files cache reused.
   */
  sha256: Sha256Hex,
  metadata: ArtifactMetadata,
  chunks: ChunkList,
};

/** An artifact as a restore needs it: the ordered chunks, the digest of their list, and its metadata. */
export const ArtifactForRestore = z.object({ artifactId: z.string(), ...artifactFields });
export type ArtifactForRestore = z.infer<typeof ArtifactForRestore>;

export const DirTarget = z.object({ kind: z.literal('dir'), path: AbsolutePath, force: z.boolean().default(false) });
export type DirTarget = z.infer<typeof DirTarget>;

const databaseTarget = {
  host: DatabaseHost,
  port: Port,
  user: DatabaseUser,
  database: DatabaseName,
  /** On the restoring agent; never a password itself. */
  passwordFile: AbsolutePath.optional(),
  passwordEnv: EnvName.optional(),
  /** Restore into a database that already has tables. */
  force: z.boolean().default(false),
};
export const PostgresTarget = z.object({ kind: z.literal('postgres'), ...databaseTarget });
export type PostgresTarget = z.infer<typeof PostgresTarget>;
export const MysqlTarget = z.object({ kind: z.literal('mysql'), ...databaseTarget });
export type MysqlTarget = z.infer<typeof MysqlTarget>;

export const RestoreTarget = z.discriminatedUnion('kind', [DirTarget, PostgresTarget, MysqlTarget]);
export type RestoreTarget = z.infer<typeof RestoreTarget>;

export const HostRewrite = z.object({ from: z.string().min(1), to: z.string().min(1) });

/** One check of a drill: e.g. "postgres shop: tables and row counts", "files: manifest", "sql: select …". */
export const DrillCheckResult = z.object({ name: z.string().max(500), ok: z.boolean(), detail: z.string().max(4000) });
export type DrillCheckResult = z.infer<typeof DrillCheckResult>;

export const DrillReport = z.object({
  /** From the first chunk requested to the last artifact restored and checked by its source (the RTO). */
  restoreMs: z.number().int().min(0),
  bytesRestored: z.number().int().min(0),
  checks: z.array(DrillCheckResult),
});
export type DrillReport = z.infer<typeof DrillReport>;

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
    /** In an encrypted repository: the key check of the agent's passphrase, so the server refuses a wrong one. */
    keyCheck: z.string().optional(),
  }),
  /**
   * The next chunks of the artifact, in order: as many as were ready at once (one message, not one per chunk).
   * The server answers chunks.answer: which it holds (no upload needed), which to send.
   */
  'chunks.offer': z.object({ uploadId: z.uuid(), chunks: z.array(ChunkRef).min(1).max(UPLOAD_WINDOW) }),
  /**
   * The next chunks of the artifact, in order, reused unread from the files cache: each one this job's
   * chunks.query found in the store (and so claimed). Nothing is sent back; a chunk not claimed fails the upload.
   */
  'chunks.reused': z.object({ uploadId: z.uuid(), chunks: z.array(ChunkUse).min(1).max(MAX_CHUNK_QUERY) }),
  'artifact.end': z.object({
    jobId: z.string(),
    uploadId: z.uuid(),
    size: z.number().int().min(0),
    sha256: Sha256Hex,
    chunks: z.number().int().min(0),
    metadata: ArtifactMetadata,
  }),
  'artifact.abort': z.object({ jobId: z.string(), uploadId: z.uuid(), reason: z.string().max(4000) }),
  /**
   * Which of these chunks does the store lack? Asked before a backup reuses the chunks its files cache remembers.
   * The chunks the server reports present stay protected from garbage collection until the job ends.
   */
  'chunks.query': z.object({ jobId: z.string(), queryId: z.uuid(), chunkIds: z.array(Sha256Hex).min(1).max(MAX_CHUNK_QUERY) }),
  'chunk.request': z.object({ jobId: z.string(), transferId: z.uuid(), chunkIds: z.array(Sha256Hex).min(1).max(DOWNLOAD_WINDOW) }),
  'job.finished': z.object({
    jobId: z.string(),
    ok: z.boolean(),
    error: WireError.optional(),
    /** Human-readable outcome, e.g. the restore's summary. */
    summary: z.string().max(4000).optional(),
    /** For a backup: how many artifacts it produced (a recipe decides the count on the agent). */
    artifacts: z.number().int().min(0).optional(),
    /** For a drill: what was checked, and how long the restore took. `ok` is true only if every check passed. */
    drill: DrillReport.optional(),
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
    /** The repository's KDF parameters and key check, when backups are encrypted. */
    encryption: EncryptionSettings.nullable(),
  }),
  plans: z.object({ plans: z.array(Plan) }),
  'job.backup': z.object({ jobId: z.string(), plan: Plan }),
  'job.restore': z.object({
    jobId: z.string(),
    snapshotId: z.string(),
    /** At most one target per kind; each artifact goes to the target of its own kind, else to the directory. */
    targets: z.array(RestoreTarget).min(1),
    /** Restore owners (uid/gid) as recorded; off for drills and when not running as root. */
    preserveOwner: z.boolean(),
    artifacts: z.array(ArtifactForRestore).min(1),
    /** The recipe that made the snapshot, for its after-restore step (e.g. rewriting hosts in pydio.json). */
    recipe: z.enum(RecipeNames).nullable().default(null),
    rewriteHosts: z.array(HostRewrite).default([]),
  }),
  /**
   * A restore drill: restore every artifact into scratch (throwaway PostgreSQL/MariaDB, temp dirs) on this
   * agent, check it against what was recorded at backup, time it, tear everything down, and report.
   */
  'job.drill': z.object({
    jobId: z.string(),
    drillId: z.string(),
    planId: z.string(),
    snapshotId: z.string(),
    artifacts: z.array(ArtifactForRestore).min(1),
    checks: z.array(DrillCheck),
  }),
  'job.cancel': z.object({ jobId: z.string(), reason: z.string() }),
  /**
   * The answer to one chunks.offer: `have`, chunks the store already holds (part of the artifact; nothing needs to
   * travel); `want`, chunks it lacks, each to be sent as a binary frame of the upload (an id offered twice and
   * lacking is wanted twice).
   */
  'chunks.answer': z.object({ uploadId: z.uuid(), have: z.array(Sha256Hex).max(UPLOAD_WINDOW), want: z.array(Sha256Hex).max(UPLOAD_WINDOW) }),
  /** These uploaded chunks are verified and packed (their artifact counts as stored only once they are durable). */
  'chunks.ack': z.object({ uploadId: z.uuid(), chunkIds: z.array(Sha256Hex).min(1).max(UPLOAD_WINDOW) }),
  'artifact.stored': z.object({ jobId: z.string(), uploadId: z.uuid(), artifactId: z.string() }),
  'upload.failed': z.object({ jobId: z.string(), uploadId: z.uuid(), error: WireError }),
  /** The answer to chunks.query: those of the asked ids the store lacks (or is deleting). */
  'chunks.absent': z.object({ queryId: z.uuid(), chunkIds: z.array(Sha256Hex).max(MAX_CHUNK_QUERY) }),
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

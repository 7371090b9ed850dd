import { z } from 'zod';
import { LifeboatError } from './errors.js';
import { Plan, listIssues } from './plan.js';
import { usedBytes } from './chunk-slices.js';
import { artifactFields } from './protocol.js';
import { compressJson, readJson } from './store/compressed-json.js';

/**
 * The self-describing store (DESIGN §5): what lies where, and the manifest each snapshot leaves beside its
 * chunks, so the catalog can be rebuilt and a snapshot restored from the store alone.
 *   packs/<first 2 hex>/<packId>   stored chunks (chunk-codec.ts) back to back (store/pack.ts)
 *   index/<packId>.json            which chunk lies where in that pack
 *   snapshots/<snapshotId>.json    one snapshot's manifest (below), written after all its chunks are durable
 * (index and snapshot objects are gzip-compressed JSON, store/compressed-json.ts: `zcat` reads them; older
 * versions wrote them plain, which is still read)
 *   config/encryption.json         KDF parameters and key check (keys.ts EncryptionSettings), never a key
 *   config/unencrypted.json        the owner's choice to store backups in plaintext (`lifeboat encryption off`)
 *   quarantine/chunks/<2>/<id>     a copy of a chunk `verify` found damaged (evidence)
 */
export const SNAPSHOTS_PREFIX = 'snapshots/';
export const ENCRYPTION_CONFIG_KEY = 'config/encryption.json';
export const UNENCRYPTED_CONFIG_KEY = 'config/unencrypted.json';

/** Where a single chunk is kept apart from the packs (quarantine). */
export function chunkKey(id: string): string {
  return `chunks/${id.slice(0, 2)}/${id}`;
}

export function snapshotManifestKey(snapshotId: string): string {
  return `${SNAPSHOTS_PREFIX}${snapshotId}.json`;
}

/** The snapshot id a manifest key names, or null for any other key under snapshots/. */
export function snapshotIdOfKey(key: string): string | null {
  const match = /^snapshots\/([A-Za-z0-9_-]{1,100})\.json$/.exec(key);
  return match ? match[1]! : null;
}

/**
 * 1: every chunk list entry is a whole chunk. 2: some use a slice of a chunk (protocol.ts ChunkUse), which an
 * older Lifeboat must not read as whole chunks. A manifest is written as 1 when it has no slice, so older
 * versions can still read it.
 */
const MANIFEST_FORMATS = [1, 2] as const;

/** An artifact as its snapshot's manifest records it: the same facts the catalog keeps, chunk list included. */
export const ManifestArtifact = z
  .object({ id: z.string().min(1).max(100), ...artifactFields })
  .refine((a) => a.chunks.reduce((n, c) => n + usedBytes(c), 0) === a.size, { message: 'the chunk sizes do not add up to the artifact size', path: ['size'] });
export type ManifestArtifact = z.infer<typeof ManifestArtifact>;

const manifestShape = {
  format: z.literal(MANIFEST_FORMATS),
  snapshotId: z.string().regex(/^[A-Za-z0-9_-]{1,100}$/),
  planId: z.string().min(1),
  agentId: z.string().min(1),
  jobId: z.string().min(1),
  /** By the server's clock (DESIGN §11), ISO 8601. */
  createdAt: z.iso.datetime(),
  startedAt: z.iso.datetime(),
  /** The plan as it was when the snapshot was taken: enough to recreate the plan after a total loss. */
  plan: Plan,
  artifacts: z.array(ManifestArtifact).min(1),
};

function artifactsInOrder(m: { format: number; artifacts: { step: number; chunks: { offset?: number | undefined }[] }[] }, ctx: z.RefinementCtx): void {
  m.artifacts.forEach((a, i) => {
    if (a.step !== i) ctx.addIssue({ code: 'custom', path: ['artifacts', i, 'step'], message: `artifact ${i} has step ${a.step}; steps run 0, 1, 2… in order` });
    if (m.format < 2 && a.chunks.some((c) => c.offset !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['artifacts', i, 'chunks'], message: `artifact ${i} lists slices of chunks, which format ${m.format} has not` });
    }
  });
}

export const SnapshotManifest = z.object(manifestShape).superRefine(artifactsInOrder);
export type SnapshotManifest = z.infer<typeof SnapshotManifest>;

/**
 * The same manifest with its plan left unchecked: a snapshot stays restorable (and rebuildable) even when its
 * plan no longer passes this version's plan schema.
 */
const ManifestWithAnyPlan = z.object({ ...manifestShape, plan: z.unknown() }).superRefine(artifactsInOrder);

/** A manifest's content as the server holds it (artifact kinds and metadata as received, checked here). */
export type SnapshotManifestInput = Omit<SnapshotManifest, 'format' | 'artifacts'> & {
  artifacts: readonly (Omit<ManifestArtifact, 'kind' | 'metadata'> & { kind: string; metadata: unknown })[];
};

/** Validates what is about to be written, so the store never holds a manifest rebuild or restore cannot read. */
export function buildSnapshotManifest(input: SnapshotManifestInput): SnapshotManifest {
  const sliced = input.artifacts.some((a) => a.chunks.some((c) => c.offset !== undefined));
  const parsed = SnapshotManifest.safeParse({ format: sliced ? 2 : 1, ...input });
  if (!parsed.success) throw new LifeboatError('internal', `snapshot ${input.snapshotId}: its manifest does not validate`, listIssues(parsed.error).slice(0, 10));
  return parsed.data;
}

/**
 * Compressed (store/compressed-json.ts; since the version with catalog migration 0005: restore-from-store and
 * rebuild-catalog of earlier versions cannot read these): a manifest lists every chunk of its snapshot, changed or
 * not, about 96 bytes per chunk as JSON and 40 compressed (0.8 against 0.35 MB per snapshot of the 1 GiB benchmark).
 */
export function encodeSnapshotManifest(manifest: SnapshotManifest): Promise<Buffer> {
  return compressJson(manifest);
}

export type ReadManifest =
  | { ok: true; manifest: Omit<SnapshotManifest, 'plan'> & { plan: Plan | null }; problems: string[] }
  | { ok: false; problems: string[] };

/**
 * A manifest read back from the (untrusted) store. `ok` with a null plan and a problem when only the plan no
 * longer validates; not `ok` when anything a restore depends on is wrong, or the manifest is not the one its key names.
 */
export function readSnapshotManifest(bytes: Buffer, key?: string): ReadManifest {
  const read = readJson(bytes);
  if (!read.ok) return { ok: false, problems: [read.problem] };
  const raw = read.value;
  const format = (raw as { format?: unknown } | null)?.format;
  if (typeof raw === 'object' && raw !== null && !(MANIFEST_FORMATS as readonly unknown[]).includes(format)) {
    return { ok: false, problems: [`manifest format ${JSON.stringify(format)} is not one this Lifeboat reads (${MANIFEST_FORMATS.join(', ')}); a newer Lifeboat may read it`] };
  }
  const parsed = ManifestWithAnyPlan.safeParse(raw);
  if (!parsed.success) return { ok: false, problems: listIssues(parsed.error).slice(0, 10) };
  const manifest = parsed.data;
  if (key !== undefined && snapshotIdOfKey(key) !== manifest.snapshotId) {
    return { ok: false, problems: [`it names snapshot ${manifest.snapshotId}, not the one its key ${key} says`] };
  }
  const plan = Plan.safeParse(manifest.plan);
  if (plan.success && plan.data.id !== manifest.planId) {
    return { ok: true, manifest: { ...manifest, plan: null }, problems: [`its plan body is plan "${plan.data.id}", not ${manifest.planId} (the snapshot is still usable)`] };
  }
  if (!plan.success) {
    const problems = listIssues(plan.error).slice(0, 3).map((p) => `plan.${p}`);
    return { ok: true, manifest: { ...manifest, plan: null }, problems: ['its plan does not validate (the snapshot is still usable):', ...problems] };
  }
  return { ok: true, manifest: { ...manifest, plan: plan.data }, problems: [] };
}

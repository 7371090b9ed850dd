import {
  Cipher,
  deriveRepositoryKeys,
  describeError,
  EncryptionSettings,
  ENCRYPTION_CONFIG_KEY,
  LifeboatError,
  readChunkHeader,
  readSnapshotManifest,
  snapshotManifestKey,
  SNAPSHOTS_PREFIX,
  StorePackIndex,
  type ChunkReader,
  type ArtifactForRestore,
  type RepositoryKeys,
  type RestoreTarget,
  type SnapshotManifest,
  type StoreBackend, parseDatabaseUrl } from '@lifeboat/shared';
import { afterRestore } from './recipes/index.js';
import { readArtifact } from './restore/store-reader.js';
import type { JobContext } from './sources/source.js';
import { sourceFor, targetFor } from './sources/registry.js';

/**
 * `lifeboat-agent restore-from-store`: a snapshot restored with only the store and the passphrase, for when the
 * server itself is the disaster. The manifest in the store says what the snapshot holds; each artifact is read
 * chunk by chunk (restore/store-reader.ts, every chunk verified) into the same Source restore as a normal restore.
 */

type StoreReader = Pick<StoreBackend, 'get' | 'getRange' | 'has' | 'list'>;
type Manifest = Omit<SnapshotManifest, 'plan'> & { plan: SnapshotManifest['plan'] | null };

export interface StoreSnapshotSummary {
  snapshotId: string;
  planId: string;
  agentId: string;
  createdAt: string;
  size: number;
  artifacts: { step: number; kind: string; name: string; size: number }[];
}

export interface ManifestProblem {
  key: string;
  problems: string[];
}

/** Every snapshot the store describes, newest first; manifests that cannot be read are listed apart. */
export async function listStoreSnapshots(store: StoreReader): Promise<{ snapshots: StoreSnapshotSummary[]; damaged: ManifestProblem[] }> {
  const snapshots: StoreSnapshotSummary[] = [];
  const damaged: ManifestProblem[] = [];
  const keys: string[] = [];
  for await (const key of store.list(SNAPSHOTS_PREFIX)) if (key.endsWith('.json')) keys.push(key);
  for (const key of keys.sort()) {
    let bytes: Buffer;
    try {
      bytes = await store.get(key);
    } catch (err) {
      damaged.push({ key, problems: [`cannot be read: ${describeError(err).message}`] });
      continue;
    }
    const read = readSnapshotManifest(bytes, key);
    if (!read.ok) {
      damaged.push({ key, problems: read.problems });
      continue;
    }
    const m = read.manifest;
    snapshots.push({
      snapshotId: m.snapshotId,
      planId: m.planId,
      agentId: m.agentId,
      createdAt: m.createdAt,
      size: m.artifacts.reduce((n, a) => n + a.size, 0),
      artifacts: m.artifacts.map((a) => ({ step: a.step, kind: a.kind, name: a.name, size: a.size })),
    });
  }
  snapshots.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.snapshotId.localeCompare(a.snapshotId));
  return { snapshots, damaged };
}

/** A snapshot's manifest from the store, verified. */
export async function readStoreManifest(store: StoreReader, snapshotId: string): Promise<{ manifest: Manifest; remarks: string[] }> {
  const key = snapshotManifestKey(snapshotId);
  let bytes: Buffer;
  try {
    bytes = await store.get(key);
  } catch (err) {
    if (err instanceof LifeboatError && err.code === 'not_found') {
      throw new LifeboatError('not_found', `the store has no snapshot ${snapshotId} (no ${key}); list the snapshots it holds with --list`);
    }
    throw err;
  }
  const read = readSnapshotManifest(bytes, key);
  if (!read.ok) throw new LifeboatError('integrity', `the manifest of snapshot ${snapshotId} (${key}) is damaged; it cannot be restored from this store`, read.problems);
  return { manifest: read.manifest, remarks: read.problems };
}

/**
 * The repository keys from the store's encryption settings and a passphrase; null when the store is not
 * encrypted. A missing or wrong passphrase is refused here, before anything is written.
 */
export async function repositoryKeys(store: StoreReader, passphrase: string | null): Promise<{ keys: RepositoryKeys | null; remark: string | null }> {
  if (!(await store.has(ENCRYPTION_CONFIG_KEY))) {
    return { keys: null, remark: passphrase === null ? null : `the store has no ${ENCRYPTION_CONFIG_KEY}: it is not encrypted, the passphrase is not used` };
  }
  let settings: EncryptionSettings;
  try {
    settings = EncryptionSettings.parse(JSON.parse((await store.get(ENCRYPTION_CONFIG_KEY)).toString('utf8')));
  } catch (err) {
    if (err instanceof LifeboatError) throw err;
    throw new LifeboatError('integrity', `the store's ${ENCRYPTION_CONFIG_KEY} is damaged; without it no encrypted chunk can be read — restore it from a copy`);
  }
  if (passphrase === null) {
    throw new LifeboatError('forbidden', 'the store is encrypted: give the repository passphrase with --passphrase-file (the file agents name in passphraseFile)');
  }
  const keys = deriveRepositoryKeys(passphrase, settings.kdf);
  if (keys.keyCheck !== settings.keyCheck) {
    throw new LifeboatError('forbidden', "the passphrase does not match this repository's (key check differs); nothing was restored");
  }
  return { keys, remark: null };
}

export interface StoreRestoreOptions {
  store: StoreReader;
  snapshotId: string;
  /** At most one per kind; each artifact goes to the target of its source's preferred kind. */
  targets: RestoreTarget[];
  passphrase: string | null;
  /** Only these artifacts (steps from 0); all by default. */
  artifacts?: number[];
  rewriteHosts?: { from: string; to: string }[];
  /** Restore recorded owners (as root); as in a normal restore. */
  preserveOwner: boolean;
  ctx: JobContext;
  /** Chunks read ahead per artifact (see readArtifact). */
  readAhead?: number;
}

export interface StoreRestoreResult {
  manifest: Manifest;
  summaries: string[];
  skipped: string[];
  /** Things the person should know that did not stop the restore. */
  remarks: string[];
}

export async function restoreFromStore(options: StoreRestoreOptions): Promise<StoreRestoreResult> {
  const { store, ctx } = options;
  const { manifest, remarks } = await readStoreManifest(store, options.snapshotId);
  const { keys, remark } = await repositoryKeys(store, options.passphrase);
  if (remark) remarks.push(remark);
  const steps = manifest.artifacts.map((a) => a.step);
  const unknown = (options.artifacts ?? []).filter((n) => !steps.includes(n));
  if (unknown.length) throw new LifeboatError('bad_request', `snapshot ${manifest.snapshotId} has no artifact ${unknown.join(', ')} (it has ${steps.join(', ')})`);
  const chosen = manifest.artifacts.filter((a) => !options.artifacts?.length || options.artifacts.includes(a.step));
  // Where each chunk of this snapshot lies: the packs' index objects, read once (the catalog that knows it is on
  // the lost server), keeping the snapshot's chunks only.
  const chunks = await StorePackIndex.load(store, { only: new Set(manifest.artifacts.flatMap((a) => a.chunks.map((c) => c.id))) });
  for (const problem of chunks.problems.slice(0, 20)) remarks.push(`a pack index could not be read (its chunks count as missing): ${problem}`);
  if (!keys) await refuseEncryptedWithoutSettings(chunks, manifest);

  // Every artifact must have somewhere to go before the first byte is written.
  const plan = await Promise.all(
    chosen.map(async (a) => {
      const artifact: ArtifactForRestore = { artifactId: a.id, step: a.step, kind: a.kind, name: a.name, size: a.size, sha256: a.sha256, metadata: a.metadata, chunks: a.chunks };
      return { artifact, target: await targetFor(a.kind, options.targets) };
    }),
  );
  const summaries: string[] = [];
  const skipped: string[] = [];
  let dirUsed = false;
  for (const [index, { artifact, target }] of plan.entries()) {
    ctx.log.info(`artifact ${index + 1}/${plan.length}: ${artifact.kind} ${artifact.name} (${artifact.chunks.length} chunks) → ${target.kind === 'dir' ? target.path : `${target.kind} ${target.database}`}`);
    const phase = `restoring ${index + 1}/${plan.length} ${artifact.kind}`;
    const input = readArtifact(chunks, artifact, keys, {
      readAhead: options.readAhead,
      signal: ctx.signal,
      onProgress: (bytes) => ctx.progress(phase, bytes, artifact.size),
    });
    // As in a normal restore: the emptiness check applies to the directory as found, not to what an earlier artifact wrote.
    const effective = target.kind === 'dir' && dirUsed ? { ...target, force: true } : target;
    if (target.kind === 'dir') dirUsed = true;
    const result = await (await sourceFor(artifact.kind)).restore(input, effective, { preserveOwner: options.preserveOwner, artifact }, ctx);
    summaries.push(result.summary);
    skipped.push(...result.skipped);
  }
  const dir = options.targets.find((t) => t.kind === 'dir');
  const recipe = manifest.plan?.recipe?.name;
  if (recipe && dir) summaries.push(...(await afterRestore(recipe, dir.path, { rewriteHosts: options.rewriteHosts ?? [] }, ctx)));
  return { manifest, summaries, skipped, remarks };
}

/** Encrypted chunks in a store that lost its encryption settings: say so before anything is written. */
async function refuseEncryptedWithoutSettings(chunks: ChunkReader, manifest: Manifest): Promise<void> {
  const first = manifest.artifacts.find((a) => a.chunks.length > 0)?.chunks[0];
  if (!first) return;
  let header;
  try {
    header = readChunkHeader(await chunks.readChunk(first.id));
  } catch {
    return; // Reported, with the artifact it belongs to, when the restore reads it.
  }
  if (header.cipher !== Cipher.None) {
    throw new LifeboatError('integrity', `the snapshot's chunks are encrypted, but the store has no ${ENCRYPTION_CONFIG_KEY} (the KDF salt and parameters): the passphrase alone cannot make the key — put that file back from a copy of the store`);
  }
}

/** postgres://user@host:port/db (or mysql://) → a database target; a password in the URL is refused (argv, shell history). */
export function databaseTarget(kind: 'postgres' | 'mysql', url: string, passwordFile: string | undefined, force: boolean): RestoreTarget {
  return { kind, ...parseDatabaseUrl(kind, url), force, ...(passwordFile ? { passwordFile } : {}) };
}

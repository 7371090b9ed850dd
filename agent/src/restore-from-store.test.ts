import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildSnapshotManifest,
  chunkListDigest,
  ContentDefinedChunker,
  deriveRepositoryKeys,
  encodeChunk,
  encodeSnapshotManifest,
  ENCRYPTION_CONFIG_KEY,
  FsBackend,
  newEncryptionSettings,
  Plan,
  snapshotManifestKey,
  type ArtifactMetadata,
  packKey,
  readPackIndex,
  writePack,
  type ChunkKeys,
} from '@lifeboat/shared';
import { restoreFromStoreCommand } from './cli/restore-from-store.js';
import { databaseTarget, listStoreSnapshots, restoreFromStore } from './restore-from-store.js';
import { filesSource } from './sources/files.js';
import { fakeJobContext, rejection } from './sources/test-context.suite.js';

const PASSPHRASE = 'correct horse battery staple, long enough';
let base: string;
let store: FsBackend;
let keys: ChunkKeys;
let data: string;
const snapshots: string[] = [];

/** A files backup of `data` written into the store as the server would: chunks, then the manifest. */
async function backUp(snapshotId: string, createdAt: string): Promise<void> {
  const { ctx } = fakeJobContext();
  const artifact = await filesSource.backup({ paths: [data], exclude: [], oneFileSystem: false } as never, ctx);
  const chunker = new ContentDefinedChunker();
  const chunks: { id: string; size: number }[] = [];
  const put = async (piece: Buffer) => {
    const chunk = encodeChunk(piece, { level: 3, keys });
    await writePack(store, [{ id: chunk.id, stored: chunk.stored, plainSize: chunk.size }]);
    chunks.push({ id: chunk.id, size: chunk.size });
  };
  let size = 0;
  for await (const piece of artifact.stream as AsyncIterable<Buffer>) {
    size += piece.length;
    for (const chunk of chunker.push(piece)) await put(chunk);
  }
  for (const chunk of chunker.finish()) await put(chunk);
  const metadata: ArtifactMetadata = await artifact.metadata;
  const plan = Plan.parse({ id: 'web', agent: 'web-1', steps: [{ files: { paths: [data] } }] });
  const manifest = buildSnapshotManifest({
    snapshotId,
    planId: 'web',
    agentId: 'agt_web1',
    jobId: `job_${snapshotId}`,
    createdAt,
    startedAt: createdAt,
    plan,
    artifacts: [{ id: `art_${snapshotId}`, step: 0, kind: 'files', name: artifact.name, size, sha256: chunkListDigest(chunks), metadata, chunks }],
  });
  await store.put(snapshotManifestKey(snapshotId), await encodeSnapshotManifest(manifest));
  snapshots.push(snapshotId);
}

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'lifeboat-from-store-'));
  store = new FsBackend(join(base, 'store'));
  const settings = newEncryptionSettings(PASSPHRASE);
  await store.put(ENCRYPTION_CONFIG_KEY, Buffer.from(JSON.stringify(settings)));
  keys = deriveRepositoryKeys(PASSPHRASE, settings.kdf);
  data = join(base, 'data');
  await mkdir(join(data, 'sub'), { recursive: true });
  await writeFile(join(data, 'notes.txt'), 'hello from the store\n'.repeat(1000));
  await writeFile(join(data, 'sub', 'blob.bin'), randomBytes(3_000_000));
  await backUp('snap_first', '2025-03-01T02:00:00.000Z');
  await writeFile(join(data, 'later.txt'), 'added before the second backup\n');
  await backUp('snap_second', '2025-03-02T02:00:00.000Z');
  await store.put('snapshots/snap_broken.json', Buffer.from('{"format":1,'));
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

async function sameFile(restoredRoot: string, relative: string): Promise<boolean> {
  const [a, b] = await Promise.all([readFile(join(data, relative)), readFile(join(restoredRoot, data.slice(1), relative))]);
  return a.equals(b);
}

describe('listStoreSnapshots', () => {
  it('lists the snapshots newest first, and damaged manifests apart', async () => {
    const { snapshots: list, damaged } = await listStoreSnapshots(store);
    expect(list.map((s) => s.snapshotId)).toEqual(['snap_second', 'snap_first']);
    expect(list[0]).toMatchObject({ planId: 'web', agentId: 'agt_web1', createdAt: '2025-03-02T02:00:00.000Z' });
    expect(list[0]!.size).toBeGreaterThan(3_000_000);
    expect(damaged).toEqual([{ key: 'snapshots/snap_broken.json', problems: ['not valid JSON (truncated or damaged)'] }]);
  });
});

describe('restoreFromStore', () => {
  it('restores a snapshot of an encrypted store with only the store and the passphrase', async () => {
    const target = join(base, 'restored-1');
    const { ctx, progress } = fakeJobContext();
    const result = await restoreFromStore({ store, snapshotId: 'snap_first', targets: [{ kind: 'dir', path: target, force: false }], passphrase: PASSPHRASE, preserveOwner: false, ctx });
    expect(result.summaries[0]).toMatch(/^restored \d+ entries .* into /);
    expect(await sameFile(target, 'notes.txt')).toBe(true);
    expect(await sameFile(target, 'sub/blob.bin')).toBe(true);
    await expect(stat(join(target, data.slice(1), 'later.txt'))).rejects.toMatchObject({ code: 'ENOENT' });
    const reading = progress.filter((p) => p.phase === 'restoring 1/1 files');
    expect(reading.at(-1)!.bytes).toBe(reading.at(-1)!.totalBytes);
  });

  it('refuses a wrong or missing passphrase before writing anything', async () => {
    const target = join(base, 'never-written');
    const { ctx } = fakeJobContext();
    const request = { store, snapshotId: 'snap_second', targets: [{ kind: 'dir' as const, path: target, force: false }], preserveOwner: false, ctx };
    const wrong = await rejection(restoreFromStore({ ...request, passphrase: 'not the passphrase at all' }));
    expect(wrong).toMatchObject({ code: 'forbidden', message: expect.stringMatching(/passphrase does not match .* nothing was restored/) });
    const missing = await rejection(restoreFromStore({ ...request, passphrase: null }));
    expect(missing).toMatchObject({ code: 'forbidden', message: expect.stringMatching(/store is encrypted: give .* --passphrase-file/) });
    await expect(stat(target)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('says what is missing when the store lost its encryption settings', async () => {
    const copy = new FsBackend(join(base, 'store-without-settings'));
    for await (const key of store.list('')) if (key !== ENCRYPTION_CONFIG_KEY) await copy.put(key, await store.get(key));
    const { ctx } = fakeJobContext();
    const target = join(base, 'never-written-2');
    const err = await rejection(restoreFromStore({ store: copy, snapshotId: 'snap_first', targets: [{ kind: 'dir', path: target, force: false }], passphrase: PASSPHRASE, preserveOwner: false, ctx }));
    expect(err.message).toMatch(/chunks are encrypted, but the store has no config\/encryption.json/);
    await expect(stat(target)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('says how to find snapshots when the one asked for is not there', async () => {
    const { ctx } = fakeJobContext();
    const err = await rejection(restoreFromStore({ store, snapshotId: 'snap_nope', targets: [{ kind: 'dir', path: join(base, 'x'), force: false }], passphrase: PASSPHRASE, preserveOwner: false, ctx }));
    expect(err).toMatchObject({ code: 'not_found', message: expect.stringContaining('--list') });
  });

  it('fails, naming the chunk, when the store lost one', async () => {
    const copy = new FsBackend(join(base, 'store-copy'));
    for await (const key of store.list('')) await copy.put(key, await store.get(key));
    const manifest = JSON.parse(gunzipSync(await copy.get(snapshotManifestKey('snap_second'))).toString()) as { artifacts: { chunks: { id: string }[] }[] };
    const lost = manifest.artifacts[0]!.chunks.at(-1)!.id;
    for await (const key of copy.list('index/')) {
      const index = readPackIndex(await copy.get(key), key);
      if (index.chunks.some(([id]) => id === lost)) await copy.delete(packKey(index.pack));
    }
    const { ctx } = fakeJobContext();
    const err = await rejection(restoreFromStore({ store: copy, snapshotId: 'snap_second', targets: [{ kind: 'dir', path: join(base, 'restored-lost'), force: false }], passphrase: PASSPHRASE, preserveOwner: false, ctx }));
    expect(err.message).toContain(`chunk ${lost.slice(0, 16)}… is missing from the store`);
  });
});

describe('restore-from-store command', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return { out, err, io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l), openStore: async () => store, signal: new AbortController().signal } };
  };
  const flags = { store: '/unused', artifact: [], rewriteHost: [] };

  it('lists snapshots as a table', async () => {
    const { out, err, io: sink } = io();
    expect(await restoreFromStoreCommand({ ...flags, list: true }, sink)).toBe(0);
    expect(out[0]).toMatch(/^SNAPSHOT\s+PLAN\s+AGENT\s+TIME\s+SIZE\s+ARTIFACTS$/);
    expect(out[1]).toMatch(/^snap_second\s+web\s+agt_web1\s+2025-03-02T02:00:00Z\s+[\d.]+ MiB\s+\[0\] files /);
    expect(err).toEqual(['damaged manifest snapshots/snap_broken.json: not valid JSON (truncated or damaged)']);
  });

  it('restores into a directory and reads the passphrase from a file', async () => {
    const { out, io: sink } = io();
    const passFile = join(base, 'pass');
    await writeFile(passFile, PASSPHRASE + '\n', { mode: 0o600 });
    const target = join(base, 'restored-cli');
    expect(await restoreFromStoreCommand({ ...flags, snapshot: 'snap_second', to: target, passphraseFile: passFile }, sink)).toBe(0);
    expect(out[0]).toMatch(/^restored snapshot snap_second of plan web \(taken 2025-03-02T02:00:00.000Z\)/);
    expect(await sameFile(target, 'later.txt')).toBe(true);
  });

  it('refuses a command without a snapshot or a target, and a password in a database URL', async () => {
    const { io: sink } = io();
    expect((await rejection(restoreFromStoreCommand({ ...flags, to: '/tmp/x' }, sink))).message).toMatch(/--snapshot ID/);
    expect((await rejection(restoreFromStoreCommand({ ...flags, snapshot: 'snap_first' }, sink))).message).toMatch(/give where to restore/);
    expect(() => databaseTarget('postgres', 'postgres://u:secret@h/db', undefined, false)).toThrow(/leave the password out/);
    expect(databaseTarget('postgres', 'postgres://app@db.internal:6543/shop', '/root/pg.pass', true)).toEqual({ kind: 'postgres', host: 'db.internal', port: 6543, user: 'app', database: 'shop', force: true, passwordFile: '/root/pg.pass' });
  });
});

import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBackend } from '../shared/src/store/fs-backend.js';
import { openStore } from '../shared/src/store/open-store.js';
import { startS3rver } from '../shared/src/store/s3rver.suite.js';
import { describeTree, generateTree } from './tree.js';
import { BIN, enrollAgent, runCli, startTestServer, tempDir, waitForJob, type JobLike, type TestAgent, type TestServer } from './harness.js';

interface SnapshotLike {
  id: string;
  planId: string;
  agentName: string;
  createdAt: string;
  size: number;
  artifacts: { step: number; kind: string; name: string; size: number; sha256: string; chunkCount: number }[];
}

interface StatsLike {
  plans: { planId: string; snapshots: number; bytesIn: number; bytesStored: number; uniqueChunks: number; chunksWithoutStoredSize: number; dedupRatio: number | null }[];
  total: { snapshots: number; bytesIn: number; bytesStored: number; uniqueChunks: number; chunksWithoutStoredSize: number; dedupRatio: number | null };
}

async function setPassphraseFile(agent: TestAgent, file: string): Promise<void> {
  const config = JSON.parse(await readFile(agent.configPath, 'utf8')) as Record<string, unknown>;
  await writeFile(agent.configPath, JSON.stringify({ ...config, passphraseFile: file }), { mode: 0o600 });
}

async function backupNow(server: TestServer, plan: string): Promise<JobLike> {
  const { body } = await server.api<{ job: JobLike }>('POST', `/v1/plans/${plan}/backup`);
  const job = await waitForJob(server, body.job.id);
  expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  return job;
}

/** What a snapshot list says that a rebuilt catalog must say again (the agent's name aside: the agent is gone). */
const comparable = (list: SnapshotLike[]) => list.map(({ agentName: _agent, ...rest }) => rest).sort((a, b) => a.id.localeCompare(b.id));

describe('recovery without the catalog, and without the server', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;
  let restorer: TestAgent | null = null;
  let dataDir: string;
  let tree: string;
  let notes: string;
  let passphrase: string;
  let before: SnapshotLike[];
  let latestSite: string;

  beforeAll(async () => {
    dir = await tempDir('recovery');
    dataDir = join(dir.path, 'server');
    server = await startTestServer(dataDir);
    passphrase = join(dir.path, 'repo.pass');
    await writeFile(passphrase, 'a repository passphrase, long enough\n', { mode: 0o600 });
    const init = await runCli(BIN.admin, ['encryption', 'init', '--passphrase-file', passphrase], { LIFEBOAT_SERVER: server.url, LIFEBOAT_TOKEN: server.token });
    expect(init.code, init.stderr).toBe(0);
    agent = await enrollAgent(server, dir.path, 'web-1');
    await setPassphraseFile(agent, passphrase);
    await agent.start();

    tree = join(dir.path, 'site');
    await generateTree(tree, { bigFileBytes: 12 * 1024 * 1024 });
    notes = join(dir.path, 'notes');
    await mkdir(notes);
    await writeFile(join(notes, 'todo.txt'), 'back up everything\n'.repeat(5000));
    const plans = { plans: [
      { id: 'site', agent: 'web-1', schedule: '0 3 * * *', steps: [{ files: { paths: [tree] } }] },
      { id: 'notes', agent: 'web-1', steps: [{ files: { paths: [notes] } }] },
    ] };
    expect((await server.api('POST', '/v1/plans', plans)).status).toBe(200);
    await backupNow(server, 'site');
    await writeFile(join(tree, 'a/b/changed-later.txt'), 'written between the two backups\n');
    latestSite = (await backupNow(server, 'site')).snapshotId!;
    await backupNow(server, 'notes');
    before = (await server.api<{ snapshots: SnapshotLike[] }>('GET', '/v1/snapshots')).body.snapshots;
    expect(before).toHaveLength(3);
  });

  afterAll(async () => {
    await agent?.proc?.kill();
    await restorer?.proc?.kill();
    await server?.proc.kill();
    await dir?.cleanup();
  });

  it('reports bytes in, bytes stored and the ratio per plan and in total', async () => {
    const json = await server.admin(['stats', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const stats = JSON.parse(json.stdout) as StatsLike;
    const site = stats.plans.find((p) => p.planId === 'site')!;
    expect(site.snapshots).toBe(2);
    expect(site.bytesIn).toBe(before.filter((s) => s.planId === 'site').reduce((n, s) => n + s.size, 0));
    // Two nearly identical snapshots share almost every chunk: the second adds only the few ~1 MiB chunks around
    // the change (and the manifest at the end), under 30% of a full copy of this incompressible tree.
    expect(site.dedupRatio!).toBeGreaterThan(2 / 1.3);
    expect(stats.total).toMatchObject({ snapshots: 3, chunksWithoutStoredSize: 0 });
    const table = await server.admin(['stats']);
    expect(table.stdout).toMatch(/^site\s+2\s+/m);
    expect(table.stdout).toMatch(/^TOTAL\s+3\s+/m);
  });

  it('refuses to rebuild the catalog while the server runs', async () => {
    const result = await runCli(BIN.server, ['rebuild-catalog', '--data', dataDir, '--force']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/in use.*stop the server first/);
  });

  it('rebuilds a lost catalog from the store; the server then lists and restores the same snapshots', async () => {
    await agent.proc!.kill();
    await server.proc.kill();
    for (const suffix of ['', '-wal', '-shm']) await rm(join(dataDir, `catalog.db${suffix}`), { force: true });

    const rebuilt = await runCli(BIN.server, ['rebuild-catalog', '--data', dataDir]);
    expect(rebuilt.code, rebuilt.stderr + rebuilt.stdout).toBe(0);
    expect(rebuilt.stdout).toMatch(/3 snapshot\(s\), 3 artifact\(s\), \d+ chunk reference\(s\), 2 plan\(s\) \(2 from manifests\)/);
    expect(rebuilt.stdout).toMatch(/1 agent\(s\) named by snapshots were not in the catalog: added as revoked placeholders/);

    server = await startTestServer(dataDir);
    const after = (await server.api<{ snapshots: SnapshotLike[] }>('GET', '/v1/snapshots')).body.snapshots;
    expect(comparable(after)).toEqual(comparable(before));
    const plans = (await server.api<{ plans: { plan: { id: string; schedule?: string } }[] }>('GET', '/v1/plans')).body.plans;
    expect(plans.map((p) => p.plan.id).sort()).toEqual(['notes', 'site']);
    expect(plans.find((p) => p.plan.id === 'site')!.plan.schedule).toBe('0 3 * * *');
    const agents = (await server.api<{ agents: { name: string; revokedAt: string | null }[] }>('GET', '/v1/agents')).body.agents;
    expect(agents).toEqual([expect.objectContaining({ name: after[0]!.agentName, revokedAt: expect.any(String) })]);

    // The packs' index objects gave the rebuilt catalog every chunk's stored size: stats are exact.
    const stats = await server.admin(['stats']);
    expect(stats.stdout).toMatch(/^site +2 /m);
    expect(stats.stdout).not.toMatch(/count at their plain size/);

    // A machine enrolled afresh, with the passphrase, restores from the rebuilt catalog.
    restorer = await enrollAgent(server, dir.path, 'new-vm');
    await setPassphraseFile(restorer, passphrase);
    await restorer.start();
    const target = join(dir.path, 'restored-via-server');
    const restore = await server.admin(['restore', latestSite, '--agent', 'new-vm', '--to', target]);
    expect(restore.code, restore.stderr + restore.stdout).toBe(0);
    expect(await describeTree(join(target, tree.slice(1)))).toEqual(await describeTree(tree));
  });

  it('restores from the store alone, with only the passphrase, while the server is down', async () => {
    await restorer?.proc?.kill();
    await server.proc.kill();
    const store = join(dataDir, 'store');

    const list = await runCli(BIN.agent, ['restore-from-store', '--store', store, '--list']);
    expect(list.code, list.stderr).toBe(0);
    for (const s of before) expect(list.stdout).toMatch(new RegExp(`^${s.id}\\s+${s.planId}\\s+`, 'm'));

    const refused = join(dir.path, 'refused');
    const wrongPass = join(dir.path, 'wrong.pass');
    await writeFile(wrongPass, 'not the repository passphrase\n', { mode: 0o600 });
    const wrong = await runCli(BIN.agent, ['restore-from-store', '--store', store, '--snapshot', latestSite, '--to', refused, '--passphrase-file', wrongPass]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/passphrase does not match this repository's/);
    await expect(stat(refused)).rejects.toMatchObject({ code: 'ENOENT' });
    const none = await runCli(BIN.agent, ['restore-from-store', '--store', store, '--snapshot', latestSite, '--to', refused]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/store is encrypted: give the repository passphrase with --passphrase-file/);

    const target = join(dir.path, 'restored-from-store');
    const restored = await runCli(BIN.agent, ['restore-from-store', '--store', store, '--snapshot', latestSite, '--to', target, '--passphrase-file', passphrase]);
    expect(restored.code, restored.stderr + restored.stdout).toBe(0);
    expect(restored.stdout).toMatch(new RegExp(`restored snapshot ${latestSite} of plan site`));
    expect(restored.stderr).toMatch(/restoring 1\/1 files: .* \(100%\)/);
    expect(await describeTree(join(target, tree.slice(1)))).toEqual(await describeTree(tree));
  });

  it('does the same from a store in an S3-compatible bucket', async () => {
    const s3 = await startS3rver(join(dir.path, 's3rver'), 'lifeboat');
    try {
      const env = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
      Object.assign(process.env, env);
      const spec = `s3://lifeboat/offsite?endpoint=http://127.0.0.1:${s3.port}`;
      // The offsite copy: every object of the store, as a sync to a bucket would leave it.
      const local = new FsBackend(join(dataDir, 'store'));
      const bucket = openStore(spec);
      for await (const key of local.list('')) await bucket.put(key, await local.get(key));

      const list = await runCli(BIN.agent, ['restore-from-store', '--store', spec, '--list', '--json'], env);
      expect(list.code, list.stderr).toBe(0);
      const listed = JSON.parse(list.stdout) as { snapshots: { snapshotId: string }[]; damaged: unknown[] };
      expect(listed.snapshots.map((x) => x.snapshotId).sort()).toEqual(before.map((x) => x.id).sort());
      expect(listed.damaged).toEqual([]);

      const target = join(dir.path, 'restored-from-bucket');
      const restored = await runCli(BIN.agent, ['restore-from-store', '--store', spec, '--snapshot', latestSite, '--to', target, '--passphrase-file', passphrase], env);
      expect(restored.code, restored.stderr + restored.stdout).toBe(0);
      expect(await describeTree(join(target, tree.slice(1)))).toEqual(await describeTree(tree));

      const fresh = join(dir.path, 'server-from-bucket');
      await mkdir(fresh);
      const rebuilt = await runCli(BIN.server, ['rebuild-catalog', '--data', fresh, '--store', spec], env);
      expect(rebuilt.code, rebuilt.stderr + rebuilt.stdout).toBe(0);
      expect(rebuilt.stdout).toMatch(/3 snapshot\(s\), 3 artifact\(s\)/);
    } finally {
      s3.child.kill('SIGTERM');
    }
  });
});

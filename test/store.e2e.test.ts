import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, Socket } from 'node:net';
import { Transform } from 'node:stream';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { FsBackend, readPackIndex } from '@lifeboat/shared';
import { startS3rver } from '../shared/src/store/s3rver.suite.js';
import { describeTree, writeBigFile } from './tree.js';
import { backupNow, BIN, enrollAgent, runCli, startTestServer, tempDir, waitForJob, waitUntil, type JobLike, type TestAgent, type TestServer } from './harness.js';

async function storeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

/** Bytes of the packs the store's index objects describe: what is durable (a pack is indexed only once it is). */
async function durableBytes(storeDir: string): Promise<number> {
  const backend = new FsBackend(storeDir);
  let total = 0;
  for await (const key of backend.list('index/')) total += readPackIndex(await backend.get(key), key).size;
  return total;
}

const sentBytes = (job: JobLike) => {
  const m = /sent ([\d.]+) (B|KiB|MiB|GiB)/.exec(job.summary ?? '');
  if (!m) throw new Error(`no "sent" figure in ${job.summary}`);
  return Number(m[1]) * { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2] as 'B'];
};


/** A pass-through that holds data back to about `bytesPerSecond`. */
function throttle(bytesPerSecond: number): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      this.push(chunk);
      setTimeout(callback, (chunk.length / bytesPerSecond) * 1000);
    },
  });
}

async function setPassphraseFile(agent: TestAgent, file: string): Promise<void> {
  const config = JSON.parse(await readFile(agent.configPath, 'utf8')) as Record<string, unknown>;
  await writeFile(agent.configPath, JSON.stringify({ ...config, passphraseFile: file }), { mode: 0o600 });
}

describe('the store: deduplication, encryption, resumable uploads', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;
  let stranger: TestAgent;
  let data: string;
  const marker = 'PLAINTEXT-MARKER-THAT-MUST-NOT-REACH-THE-STORE';
  /** Text that zstd shrinks about tenfold, different per plan so that nothing deduplicates between them. */
  const compressible = (tag: string) => Array.from({ length: 80_000 }, (_, i) => `${tag}: line ${i} of a log that compresses well\n`).join('');
  const levelDirs = { off: '', default: '' };

  beforeAll(async () => {
    dir = await tempDir('store');
    server = await startTestServer(join(dir.path, 'server'));
    const right = join(dir.path, 'right.pass');
    const wrong = join(dir.path, 'wrong.pass');
    await writeFile(right, 'the right passphrase, long enough\n', { mode: 0o600 });
    await writeFile(wrong, 'a wrong passphrase, also long\n', { mode: 0o600 });
    const init = await runCli(BIN.admin, ['encryption', 'init', '--passphrase-file', right], { LIFEBOAT_SERVER: server.url, LIFEBOAT_TOKEN: server.token });
    expect(init.code, init.stderr).toBe(0);
    agent = await enrollAgent(server, dir.path, 'enc-1');
    await setPassphraseFile(agent, right);
    stranger = await enrollAgent(server, dir.path, 'enc-2');
    await setPassphraseFile(stranger, wrong);
    await agent.start();
    await stranger.start();
    data = join(dir.path, 'data');
    await mkdir(data);
    await writeFile(join(data, 'notes.txt'), `${marker}\n`.repeat(50_000));
    await writeBigFile(join(data, 'blob.bin'), 60 * 1024 * 1024);
    for (const level of ['off', 'default'] as const) {
      levelDirs[level] = join(dir.path, `level-${level}`);
      await mkdir(levelDirs[level]);
      await writeFile(join(levelDirs[level], 'app.log'), compressible(level));
    }
    const plans = { plans: [
      { id: 'enc', agent: 'enc-1', steps: [{ files: { paths: [data] } }] },
      { id: 'enc-wrong', agent: 'enc-2', steps: [{ files: { paths: [data] } }] },
      { id: 'level-off', agent: 'enc-1', compression: 'off', steps: [{ files: { paths: [levelDirs.off] } }] },
      { id: 'level-default', agent: 'enc-1', steps: [{ files: { paths: [levelDirs.default] } }] },
    ] };
    expect((await server.api('POST', '/v1/plans', plans)).status).toBe(200);
  });

  afterAll(async () => {
    await agent?.proc?.kill();
    await stranger?.proc?.kill();
    await server?.proc.kill();
    await dir?.cleanup();
  });

  it('stores encrypted, compressed chunks the store cannot read, and restores them', async () => {
    const job = await backupNow(server, 'enc');
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    const store = join(server.dataDir, 'store');
    for (const entry of await readdir(join(store, 'packs'), { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      expect((await readFile(join(entry.parentPath, entry.name))).includes(marker)).toBe(false);
    }
    const target = join(dir.path, 'restored');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 'enc-1', '--to', target]);
    expect(res.code, res.stderr).toBe(0);
    expect(await describeTree(join(target, data.slice(1)))).toEqual(await describeTree(data));
  });

  it('refuses a wrong passphrase before any data moves', async () => {
    const before = await storeBytes(join(server.dataDir, 'store'));
    const job = await backupNow(server, 'enc-wrong');
    expect(job.status).toBe('failed');
    expect(job.error!.message).toMatch(/passphrase .* does not match/);
    expect(await storeBytes(join(server.dataDir, 'store'))).toBe(before);
  });

  it('sends almost nothing when nothing changed', async () => {
    const before = await storeBytes(join(server.dataDir, 'store'));
    const job = await backupNow(server, 'enc');
    expect(job.status).toBe('succeeded');
    expect(sentBytes(job)).toBeLessThan(2 * 1024 * 1024);
    // Only the new manifest (a few KiB) was added.
    expect((await storeBytes(join(server.dataDir, 'store'))) - before).toBeLessThan(1024 * 1024);
    // The files cache: neither file was even read.
    expect(job.summary).toContain('0 file(s) read, 2 unchanged since the last backup (not read)');
  });

  it('reads only what changed, and a lost files cache only costs a full read', async () => {
    await writeFile(join(data, 'notes.txt'), `${marker} edited\n`.repeat(50_000));
    const edited = await backupNow(server, 'enc');
    expect(edited.status, JSON.stringify(edited.error)).toBe('succeeded');
    expect(edited.summary).toContain('1 file(s) read, 1 unchanged since the last backup (not read)');
    const target = join(dir.path, 'restored-edited');
    const res = await server.admin(['restore', edited.snapshotId!, '--agent', 'enc-1', '--to', target]);
    expect(res.code, res.stderr).toBe(0);
    expect(await describeTree(join(target, data.slice(1)))).toEqual(await describeTree(data));

    await rm(join(dir.path, 'enc-1-state', 'files-cache'), { recursive: true, force: true });
    const uncached = await backupNow(server, 'enc');
    expect(uncached.status, JSON.stringify(uncached.error)).toBe('succeeded');
    expect(uncached.summary).toContain('2 file(s) read, 0 unchanged');
    // Read again, but the store had every chunk: nearly nothing travelled.
    expect(sentBytes(uncached)).toBeLessThan(1024 * 1024);
  });

  it('stores only the changed files of a group of small files, and restores every snapshot whole, with or without the server', async () => {
    // 400 files of 3 KiB that do not compress: a group (about 64 KiB) re-stored whole would cost that much per edit.
    // At the same path in every run: where groups end depends on the files' full paths, and in some layouts the
    // keeping rules (tar-writer.ts KEEP_ENTRIES) rightly read a group whole, which the counts below do not allow.
    const small = join(tmpdir(), 'lifeboat-e2e-groups-of-small-files');
    await rm(small, { recursive: true, force: true });
    onTestFinished(() => rm(small, { recursive: true, force: true }));
    for (let d = 0; d < 8; d++) {
      await mkdir(join(small, `d${d}`), { recursive: true });
      for (let f = 0; f < 50; f++) await writeFile(join(small, `d${d}`, `f${f}.bin`), randomBytes(3000));
    }
    expect((await server.api('POST', '/v1/plans', { plans: [{ id: 'small', agent: 'enc-1', steps: [{ files: { paths: [small] } }] }] })).status).toBe(200);
    const first = await backupNow(server, 'small');
    expect(first.status, JSON.stringify(first.error)).toBe('succeeded');

    for (const d of [1, 4, 6]) await writeFile(join(small, `d${d}`, 'f20.bin'), randomBytes(3100));
    await writeFile(join(small, 'd3', 'f25a.bin'), randomBytes(2000));
    const edited = await backupNow(server, 'small');
    expect(edited.status, JSON.stringify(edited.error)).toBe('succeeded');
    expect(edited.summary, edited.summary ?? '').toContain('4 file(s) read, 397 unchanged since the last backup (not read)');
    // Four files (about 12 KiB) and the per-file manifest (about 20 KiB stored), not four groups (about 256 KiB).
    expect(sentBytes(edited)).toBeLessThan(80 * 1024);

    const unchanged = await backupNow(server, 'small');
    expect(unchanged.summary, unchanged.summary ?? '').toContain('0 file(s) read, 401 unchanged');
    const passphrase = join(dir.path, 'right.pass');
    for (const [n, job] of [first, edited, unchanged].entries()) {
      const viaServer = join(dir.path, `small-restored-${n}`);
      const res = await server.admin(['restore', job.snapshotId!, '--agent', 'enc-1', '--to', viaServer]);
      expect(res.code, res.stderr).toBe(0);
      const fromStore = join(dir.path, `small-from-store-${n}`);
      const direct = await runCli(BIN.agent, ['restore-from-store', '--store', join(server.dataDir, 'store'), '--snapshot', job.snapshotId!, '--to', fromStore, '--passphrase-file', passphrase]);
      expect(direct.code, direct.stderr + direct.stdout).toBe(0);
      if (n === 0) continue;
      // The later snapshots are the tree as it is now.
      expect(await describeTree(join(viaServer, small.slice(1)))).toEqual(await describeTree(small));
      expect(await describeTree(join(fromStore, small.slice(1)))).toEqual(await describeTree(small));
    }
    expect(await describeTree(join(dir.path, 'small-restored-0', small.slice(1)))).toEqual(await describeTree(join(dir.path, 'small-from-store-0', small.slice(1))));
  });

  it('compresses at the plan\'s level (3 unless it says), and not at all when it says "off"', async () => {
    const store = join(server.dataDir, 'store');
    const plain = compressible('off').length;
    const added = async (planId: string) => {
      const before = await storeBytes(store);
      const job = await backupNow(server, planId);
      expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
      return (await storeBytes(store)) - before;
    };
    expect(await added('level-off')).toBeGreaterThan(plain);
    expect(await added('level-default')).toBeLessThan(plain / 5);
  });
});

describe('a connection cut at 60% costs only what was missing', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;
  const sockets = new Set<Socket>();
  let proxy: ReturnType<typeof createServer>;

  beforeAll(async () => {
    dir = await tempDir('resume');
    server = await startTestServer(join(dir.path, 'server'));
    // The agent reaches the server through a proxy the test can cut.
    const target = new URL(server.url);
    proxy = createServer((client) => {
      const upstream = new Socket();
      upstream.connect(Number(target.port), target.hostname);
      // Agent → server at about 64 MiB/s, so the upload lasts long enough to be cut where the test wants.
      client.pipe(throttle(64 * 1024 * 1024)).pipe(upstream).pipe(client);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => undefined);
      }
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const proxied = { ...server, url: `http://127.0.0.1:${(proxy.address() as { port: number }).port}` };
    agent = await enrollAgent(proxied, dir.path, 'resume-1');
    const data = join(dir.path, 'data');
    await mkdir(data);
    await writeBigFile(join(data, 'big.bin'), 200 * 1024 * 1024);
    expect((await server.api('POST', '/v1/plans', { plans: [{ id: 'resume', agent: 'resume-1', steps: [{ files: { paths: [data] } }] }] })).status).toBe(200);
    await agent.start();
  });

  afterAll(async () => {
    await agent?.proc?.kill();
    proxy?.close();
    for (const s of sockets) s.destroy();
    await server?.proc.kill();
    await dir?.cleanup();
  });

  it('fails the cut job, retries by itself when the agent is back, and sends only the rest', async () => {
    const { body } = await server.api<{ job: JobLike }>('POST', '/v1/plans/resume/backup');
    const total = 200 * 1024 * 1024;
    // Cut once 60% is durable in the store (the store itself, not the throttled progress reports).
    const store = join(server.dataDir, 'store');
    await waitUntil(async () => (await durableBytes(store).catch(() => 0)) >= 0.6 * total, '60% stored', 60_000, 20);
    for (const s of sockets) s.destroy();
    const cut = await waitForJob(server, body.job.id);
    expect(cut.status).toBe('failed');
    expect(cut.error!.code).toBe('disconnected');
    // The server seals the pack it was filling when the agent went (those chunks were received and checked).
    await new Promise((r) => setTimeout(r, 1000));
    const durableAtCut = await durableBytes(store);
    expect(durableAtCut).toBeGreaterThan(0.55 * total);
    expect(durableAtCut).toBeLessThan(0.95 * total);

    let retry: JobLike | undefined;
    await waitUntil(async () => {
      const jobs = (await server.api<{ jobs: JobLike[] }>('GET', '/v1/jobs?plan=resume')).body.jobs;
      retry = jobs.find((j) => j.trigger === 'retry 1' && j.status === 'succeeded');
      return !!retry;
    }, 'the retry to succeed', 120_000, 200);
    const snapshots = (await server.api<{ snapshots: unknown[] }>('GET', '/v1/snapshots?plan=resume')).body.snapshots;
    expect(snapshots).toHaveLength(1);
    // The retry sent what was not durable at the cut — give or take the chunks in flight (a window: 12 MiB)
    // and the stored form's few bytes of header per chunk — and nothing that was.
    const sent = sentBytes(retry!);
    const missing = total - durableAtCut;
    expect(sent).toBeLessThan(missing + 8 * 1024 * 1024);
    expect(sent).toBeGreaterThan(missing - 8 * 1024 * 1024);
    expect(sent).toBeLessThan(0.45 * total);
  });
});

describe('a new repository', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;

  beforeAll(async () => {
    dir = await tempDir('undecided');
    server = await startTestServer(join(dir.path, 'server'), 0, [], { undecided: true });
    agent = await enrollAgent(server, dir.path, 'new-1');
    await agent.start();
    const data = join(dir.path, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'something to keep\n');
    expect((await server.api('POST', '/v1/plans', { plans: [{ id: 'first', agent: 'new-1', steps: [{ files: { paths: [data] } }] }] })).status).toBe(200);
  });

  afterAll(async () => {
    await agent?.proc?.kill();
    await server?.proc.kill();
    await dir?.cleanup();
  });

  it('takes no backup until its encryption is chosen, and says how to choose', async () => {
    const status = await server.admin(['encryption', 'status']);
    expect(status.stdout).toMatch(/^not chosen yet: no backup runs until `lifeboat encryption init --passphrase-file FILE` \(recommended\) or `lifeboat encryption off`/);
    const refused = await server.admin(['backup', 'now', 'first']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/backups are refused until this repository's encryption is chosen: `lifeboat encryption init --passphrase-file FILE`/);
    expect((await server.api<{ jobs: unknown[] }>('GET', '/v1/jobs?plan=first')).body.jobs).toEqual([]);

    const off = await server.admin(['encryption', 'off']);
    expect(off.code, off.stderr).toBe(0);
    expect((await server.admin(['encryption', 'status'])).stdout).toMatch(/^not encrypted, as chosen/);
    const job = await backupNow(server, 'first');
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  });
});

describe('a full store', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;
  let storeDir: string;

  beforeAll(async () => {
    dir = await tempDir('full');
    storeDir = join(dir.path, 'store');
    await mkdir(storeDir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', storeDir]);
    server = await startTestServer(join(dir.path, 'server'), 0, ['--store', storeDir]);
    agent = await enrollAgent(server, dir.path, 'full-1');
    await agent.start();
  });

  afterAll(async () => {
    await agent?.proc?.kill();
    await server?.proc.kill();
    try {
      execFileSync('umount', [storeDir]);
    } catch {
      /* not mounted */
    }
    await dir?.cleanup();
  });

  it('fails the job with "store full", records nothing, and keeps earlier snapshots restorable', async () => {
    const small = join(dir.path, 'small');
    const large = join(dir.path, 'large');
    await mkdir(small);
    await mkdir(large);
    await writeBigFile(join(small, 'a.bin'), 8 * 1024 * 1024);
    await writeBigFile(join(large, 'b.bin'), 80 * 1024 * 1024);
    const plans = { plans: [
      { id: 'small', agent: 'full-1', steps: [{ files: { paths: [small] } }] },
      { id: 'large', agent: 'full-1', steps: [{ files: { paths: [large] } }] },
    ] };
    expect((await server.api('POST', '/v1/plans', plans)).status).toBe(200);
    const first = await backupNow(server, 'small');
    expect(first.status).toBe('succeeded');
    const full = await backupNow(server, 'large');
    expect(full.status).toBe('failed');
    expect(full.error!.code).toBe('store_full');
    expect(full.error!.message).toMatch(/store full/);
    expect((await server.api<{ snapshots: unknown[] }>('GET', '/v1/snapshots?plan=large')).body.snapshots).toHaveLength(0);
    const target = join(dir.path, 'restored');
    const res = await server.admin(['restore', first.snapshotId!, '--agent', 'full-1', '--to', target]);
    expect(res.code, res.stderr).toBe(0);
    expect(await describeTree(join(target, small.slice(1)))).toEqual(await describeTree(small));
  });
});

describe('a server whose store is an S3-compatible bucket', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;
  let s3: Awaited<ReturnType<typeof startS3rver>>;
  const saved = { ...process.env };

  beforeAll(async () => {
    dir = await tempDir('s3');
    s3 = await startS3rver(join(dir.path, 's3rver'), 'lifeboat');
    // Credentials come from the environment, as the SDK's default chain reads them.
    process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
    process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
    server = await startTestServer(join(dir.path, 'server'), 0, ['--store', `s3://lifeboat/fleet-1?endpoint=http://127.0.0.1:${s3.port}`]);
    agent = await enrollAgent(server, dir.path, 's3-1');
    await agent.start();
  });

  afterAll(async () => {
    process.env = saved;
    await agent?.proc?.kill();
    await server?.proc.kill();
    s3?.child.kill('SIGTERM');
    await dir?.cleanup();
  });

  it('backs up into the bucket and restores from it', async () => {
    const data = join(dir.path, 'data');
    await mkdir(join(data, 'sub'), { recursive: true });
    await writeFile(join(data, 'sub/a.txt'), 'to the bucket\n'.repeat(10_000));
    await writeBigFile(join(data, 'b.bin'), 12 * 1024 * 1024);
    expect((await server.api('POST', '/v1/plans', { plans: [{ id: 's3', agent: 's3-1', steps: [{ files: { paths: [data] } }] }] })).status).toBe(200);
    const job = await backupNow(server, 's3');
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    // Nothing went to the local data directory's store.
    expect(await readdir(join(server.dataDir, 'store')).catch(() => [])).toEqual([]);
    const target = join(dir.path, 'restored');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 's3-1', '--to', target]);
    expect(res.code, res.stderr).toBe(0);
    expect(await describeTree(join(target, data.slice(1)))).toEqual(await describeTree(data));
  });
});

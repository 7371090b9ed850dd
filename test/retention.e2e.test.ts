import { cp, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBackend, StorePackIndex } from '@lifeboat/shared';
import { describeTree, writeBigFile } from './tree.js';
import { backupNow, BIN, damageStoredChunk, snapshotChunkIds, enrollAgent, runCli, startTestServer, tempDir, waitForJob, waitUntil, type JobLike, type TestAgent, type TestServer } from './harness.js';

const DAY = 86_400_000;

interface Decision {
  id: string;
  reasons: string[];
}
interface PruneReport {
  plans: { planId: string; keep: Decision[]; remove: Decision[] }[];
  removed: number;
  gc: { deleted: number; spared: number };
}

/** Chunks the store holds, by its pack index objects. */
async function chunkCount(storeDir: string): Promise<number> {
  return (await StorePackIndex.load(new FsBackend(storeDir))).size;
}

describe('retention, pruning and garbage collection', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;
  let clockFile: string;
  const start = Date.parse('2026-03-02T10:00:00Z');
  const setClock = (ms: number) => writeFile(clockFile, String(ms));

  beforeAll(async () => {
    dir = await tempDir('retention');
    clockFile = join(dir.path, 'clock');
    await setClock(start);
    process.env.LIFEBOAT_CLOCK_FILE = clockFile;
    server = await startTestServer(join(dir.path, 'server'));
    delete process.env.LIFEBOAT_CLOCK_FILE;
    agent = await enrollAgent(server, dir.path, 'ret-1');
    await agent.start();
  });

  afterAll(async () => {
    await agent?.proc?.kill();
    await server?.proc.kill();
    await dir?.cleanup();
  });

  const backup = (plan: string): Promise<JobLike> => backupNow(server, plan);

  it('keeps exactly what the policy says after a week of daily backups, and collects what nothing references', async () => {
    const data = join(dir.path, 'week');
    await mkdir(data);
    const plan = { id: 'daily', agent: 'ret-1', timezone: 'Europe/Berlin', steps: [{ files: { paths: [data] } }], retention: { keepLast: 1, keepDaily: 3 } };
    expect((await server.api('POST', '/v1/plans', { plans: [plan] })).status).toBe(200);
    const byDay: string[][] = [];
    for (let day = 0; day < 7; day++) {
      byDay.push([]);
      // Two backups on the last day, one on every other: each day's data differs, so its chunks do too.
      for (let n = 0; n < (day === 6 ? 2 : 1); n++) {
        await setClock(start + day * DAY + n * 3_600_000);
        // Yesterday's file goes: what only the removed snapshots hold becomes garbage.
        await rm(join(data, `day-${day - 1}-0.bin`), { force: true });
        await writeBigFile(join(data, `day-${day}-${n}.bin`), 2 * 1024 * 1024);
        const job = await backup('daily');
        expect(job.status).toBe('succeeded');
        byDay[day]!.push(job.snapshotId!);
      }
    }
    await setClock(start + 6 * DAY + 2 * 3_600_000);

    const dry = await server.admin(['prune', '--plan', 'daily', '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    const report = JSON.parse(dry.stdout) as PruneReport;
    const keep = report.plans[0]!.keep.map((d) => d.id).sort();
    // keepDaily 3: the newest of each of the last three days (day 4, 5, and day 6's later snapshot); keepLast 1 is
    // that same newest snapshot.
    expect(keep).toEqual([byDay[4]![0]!, byDay[5]![0]!, byDay[6]![1]!].sort());
    expect(report.plans[0]!.keep.find((d) => d.id === byDay[6]![1])!.reasons.join(' ')).toMatch(/last snapshot.*daily snapshot/);
    expect(report.plans[0]!.remove.every((d) => d.reasons.length > 0)).toBe(true);
    // A dry run changes nothing.
    expect((await server.api<{ snapshots: unknown[] }>('GET', '/v1/snapshots?plan=daily')).body.snapshots).toHaveLength(8);

    const storeDir = join(server.dataDir, 'store');
    const before = await chunkCount(storeDir);
    const real = await server.admin(['prune', '--plan', 'daily', '--grace', '0s', '--json']);
    expect(real.code, real.stderr).toBe(0);
    const done = JSON.parse(real.stdout) as PruneReport;
    expect(done.removed).toBe(5);
    const remaining = (await server.api<{ snapshots: { id: string }[] }>('GET', '/v1/snapshots?plan=daily')).body.snapshots.map((s) => s.id).sort();
    expect(remaining).toEqual(keep);
    expect(done.gc.deleted).toBeGreaterThan(0);
    expect(await chunkCount(storeDir)).toBeLessThan(before);

    // What remains still restores, byte for byte.
    const target = join(dir.path, 'restored-week');
    const res = await server.admin(['restore', byDay[6]![1]!, '--agent', 'ret-1', '--to', target]);
    expect(res.code, res.stderr).toBe(0);
    expect(await describeTree(join(target, data.slice(1)))).toEqual(await describeTree(data));
    const verify = await server.admin(['verify', '--read-data']);
    expect(verify.code, verify.stderr + verify.stdout).toBe(0);
  });

  it('never loses a chunk a backup is uploading while a prune collects garbage', async () => {
    const a = join(dir.path, 'race-a');
    const b = join(dir.path, 'race-b');
    await mkdir(a);
    await writeBigFile(join(a, 'shared.bin'), 150 * 1024 * 1024);
    const plans = { plans: [
      { id: 'race-old', agent: 'ret-1', steps: [{ files: { paths: [a] } }], retention: { keepLast: 1 } },
      { id: 'race-new', agent: 'ret-1', steps: [{ files: { paths: [b] } }] },
    ] };
    expect((await server.api('POST', '/v1/plans', { ...plans })).status).toBe(200);
    await setClock(start + 8 * DAY);
    expect((await backup('race-old')).status).toBe('succeeded');
    // The same content under another plan (its chunks are the old snapshot's), followed in the archive by a
    // large new file: the shared chunks are offered first, then the new file uploads while the prune runs.
    await cp(a, b, { recursive: true, preserveTimestamps: true });
    await writeBigFile(join(b, 'zz-new.bin'), 400 * 1024 * 1024);
    // The old plan moves on, so its first snapshot (and, but for the new upload, its chunks) can go.
    await rm(join(a, 'shared.bin'));
    await writeFile(join(a, 'small.txt'), 'new content');
    await setClock(start + 8 * DAY + 3_600_000);
    expect((await backup('race-old')).status).toBe('succeeded');

    const { body } = await server.api<{ job: JobLike }>('POST', '/v1/plans/race-new/backup');
    await waitUntil(async () => ((await server.api<{ job: JobLike }>('GET', `/v1/jobs/${body.job.id}`)).body.job.progress?.bytes ?? 0) > 160 * 1024 * 1024, 'the upload past the shared file', 60_000, 20);
    expect((await server.api<{ job: JobLike }>('GET', `/v1/jobs/${body.job.id}`)).body.job.status).toBe('running');
    const prune = await server.admin(['prune', '--plan', 'race-old', '--grace', '0s', '--json']);
    expect(prune.code, prune.stderr).toBe(0);
    expect((JSON.parse(prune.stdout) as PruneReport).removed).toBe(1);
    const job = await waitForJob(server, body.job.id);
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');

    const target = join(dir.path, 'restored-race');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 'ret-1', '--to', target]);
    expect(res.code, res.stderr).toBe(0);
    expect(await describeTree(join(target, b.slice(1)))).toEqual(await describeTree(b));
  });

  it('verify reports a damaged chunk with every snapshot it breaks, and marks them damaged', async () => {
    const snaps = (await server.api<{ snapshots: { id: string; artifacts: { id: string }[] }[] }>('GET', '/v1/snapshots?plan=race-new')).body.snapshots;
    const storeDir = join(server.dataDir, 'store');
    // Flip a byte in the middle of some stored chunk of the plan's snapshot.
    const chunks = await snapshotChunkIds(storeDir, snaps[0]!.id);
    const victim = chunks[Math.floor(chunks.length / 2)]!;
    await damageStoredChunk(storeDir, victim);
    const verify = await runCli(BIN.admin, ['verify', '--read-data', '--json'], { LIFEBOAT_SERVER: server.url, LIFEBOAT_TOKEN: server.token });
    expect(verify.code).toBe(1);
    const report = JSON.parse(verify.stdout) as { problems: { chunkId: string; snapshots: string[] }[]; damaged: string[] };
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]!.chunkId).toBe(victim);
    expect(report.damaged.length).toBeGreaterThan(0);
    const statuses = (await server.api<{ snapshots: { id: string; status: string }[] }>('GET', '/v1/snapshots')).body.snapshots;
    for (const id of report.damaged) expect(statuses.find((s) => s.id === id)!.status).toBe('damaged');
  });
});

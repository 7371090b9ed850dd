import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollAgent, startTestServer, tempDir, waitForJob, waitUntil, type JobLike, type TestAgent, type TestServer } from './harness.js';
import { writeBigFile } from './tree.js';

describe('schedules and the job lifecycle', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;
  let data: string;

  beforeAll(async () => {
    dir = await tempDir('sched');
    server = await startTestServer(join(dir.path, 'server'));
    agent = await enrollAgent(server, dir.path, 'sched-1');
    data = join(dir.path, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'a');
  });

  afterAll(async () => {
    await agent?.proc?.kill();
    await server?.proc.kill();
    await dir?.cleanup();
  });

  const jobsOf = async (plan: string) => (await server.api<{ jobs: JobLike[] }>('GET', `/v1/jobs?plan=${plan}`)).body.jobs;

  it('queues a scheduled run while the agent is offline, once, and runs it when the agent connects', async () => {
    const plan = { plans: [{ id: 'every-2s', agent: 'sched-1', schedule: '*/2 * * * * *', steps: [{ files: { paths: [data] } }] }] };
    expect((await server.api('POST', '/v1/plans', plan)).status).toBe(200);
    await waitUntil(async () => (await jobsOf('every-2s')).length > 0, 'a scheduled job', 10_000);
    await new Promise((r) => setTimeout(r, 4500));
    const queued = await jobsOf('every-2s');
    // Ticks while a run is already waiting do not pile up: one plan, one job at a time.
    expect(queued).toHaveLength(1);
    expect(queued[0]!.status).toBe('queued');

    await agent.start();
    const job = await waitForJob(server, queued[0]!.id);
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    expect(job.snapshotId).toMatch(/^snap_/);
    expect(await server.api('DELETE', '/v1/plans/every-2s')).toMatchObject({ status: 200 });
  });

  it('pushes applied plans to the agent at once', async () => {
    const plan = { plans: [{ id: 'pushed-plan', agent: 'sched-1', steps: [{ files: { paths: [data] } }] }] };
    expect((await server.api('POST', '/v1/plans', plan)).status).toBe(200);
    await agent.proc!.waitFor(/plans updated: .*pushed-plan/, 10_000);
  });

  it('never runs a plan twice at once', async () => {
    await writeBigFile(join(data, 'big.bin'), 150 * 1024 * 1024);
    const first = await server.api<{ job: JobLike }>('POST', '/v1/plans/pushed-plan/backup');
    expect(first.status).toBe(200);
    const second = await server.api<{ error: { code: string; message: string } }>('POST', '/v1/plans/pushed-plan/backup');
    expect(second.status).toBe(409);
    expect(second.body.error.message).toContain(first.body.job.id);
    expect((await waitForJob(server, first.body.job.id)).status).toBe('succeeded');
    const third = await server.api<{ job: JobLike }>('POST', '/v1/plans/pushed-plan/backup');
    expect(third.status).toBe(200);
    expect((await waitForJob(server, third.body.job.id)).status).toBe('succeeded');
  });
});

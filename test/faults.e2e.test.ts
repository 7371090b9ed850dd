import { mkdir, readFile, readdir, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION } from '@lifeboat/shared';
import { writeBigFile } from './tree.js';
import { BIN, enrollAgent, runCli, startProcess, startTestServer, tempDir, waitForJob, waitUntil, type JobLike, type TestAgent, type TestServer } from './harness.js';

const planFile = (id: string, agent: string, paths: string[]) => ({ plans: [{ id, agent, steps: [{ files: { paths } }] }] });

describe('bad input and faults', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let agent: TestAgent;
  let big: string;

  beforeAll(async () => {
    dir = await tempDir('faults');
    server = await startTestServer(join(dir.path, 'server'));
    agent = await enrollAgent(server, dir.path, 'vm-1');
    await agent.start();
    big = join(dir.path, 'big');
    await mkdir(big);
    await writeBigFile(join(big, 'data.bin'), 300 * 1024 * 1024);
  });

  afterAll(async () => {
    await agent?.proc?.kill();
    await server?.proc.kill();
    await dir?.cleanup();
  });

  it('answers 401 to a wrong admin token, and health without one', async () => {
    expect((await server.api('GET', '/v1/plans', undefined, 'wrong')).status).toBe(401);
    expect((await fetch(`${server.url}/v1/plans`)).status).toBe(401);
    expect((await fetch(`${server.url}/v1/health`)).status).toBe(200);
    const cli = await runCli(BIN.admin, ['plan', 'list'], { LIFEBOAT_SERVER: server.url, LIFEBOAT_TOKEN: 'wrong' });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/401/);
  });

  it('rejects an invalid plan with 400 and every problem by path; applies nothing', async () => {
    const res = await server.api<{ error: { code: string; details: string[] } }>('POST', '/v1/plans', {
      plans: [
        { id: 'p1', agent: 'vm-1', schedule: '61 * * * *', steps: [{ files: { paths: ['/srv'] } }, { files: {} }] },
        { id: 'p2', agent: 'vm-1', rpo: 'later', steps: [] },
      ],
    });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('invalid_plan');
    expect(res.body.error.details).toEqual(
      expect.arrayContaining(['plans[0].steps[1].files.paths: required', expect.stringMatching(/^plans\[1\]\.rpo:/), expect.stringMatching(/^plans\[1\]\.steps:/)]),
    );
    const cron = await server.api<{ error: { details: string[] } }>('POST', '/v1/plans', { plans: [{ id: 'p1', agent: 'vm-1', schedule: '61 * * * *', steps: [{ files: { paths: ['/srv'] } }] }] });
    expect(cron.status).toBe(400);
    expect(cron.body.error.details[0]).toMatch(/^plans\[0\]\.schedule: invalid cron expression/);
    expect((await server.api<{ plans: unknown[] }>('GET', '/v1/plans')).body.plans).toHaveLength(0);
  });

  it('rejects a plan for an unknown agent with a clear error', async () => {
    const res = await server.api<{ error: { details: string[] } }>('POST', '/v1/plans', planFile('ghost', 'no-such-vm', ['/srv']));
    expect(res.status).toBe(400);
    expect(res.body.error.details).toEqual(['plans[0].agent: no enrolled agent named "no-such-vm" (see `lifeboat agents list`)']);
  });

  it('fails a job whose path does not exist, naming the path, and records no snapshot', async () => {
    const missing = join(dir.path, 'not-here');
    expect((await server.api('POST', '/v1/plans', planFile('missing-path', 'vm-1', [missing]))).status).toBe(200);
    const res = await server.admin(['backup', 'now', 'missing-path', '--wait']);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(missing);
    const { body } = await server.api<{ jobs: JobLike[] }>('GET', '/v1/jobs?plan=missing-path');
    expect(body.jobs[0]!.status).toBe('failed');
    expect(body.jobs[0]!.error!.code).toBe('path_not_found');
    expect((await server.api<{ snapshots: unknown[] }>('GET', '/v1/snapshots?plan=missing-path')).body.snapshots).toHaveLength(0);
  });

  it('fails the job and records no snapshot when the agent is killed mid-upload', async () => {
    expect((await server.api('POST', '/v1/plans', planFile('killed-agent', 'vm-1', [big]))).status).toBe(200);
    const { body } = await server.api<{ job: JobLike }>('POST', '/v1/plans/killed-agent/backup');
    await waitUntil(async () => ((await server.api<{ job: JobLike }>('GET', `/v1/jobs/${body.job.id}`)).body.job.progress?.bytes ?? 0) > 0, 'upload under way');
    // A held poll (?wait) of a running job answers after the wait, with the job still running; a bad wait is refused.
    const asked = Date.now();
    const held = await server.api<{ job: JobLike }>('GET', `/v1/jobs/${body.job.id}?wait=300`);
    expect(Date.now() - asked).toBeGreaterThanOrEqual(250);
    expect(held.body.job.status).toBe('running');
    expect((await server.api('GET', `/v1/jobs/${body.job.id}?wait=forever`)).status).toBe(400);
    agent.proc!.child.kill('SIGKILL');
    const job = await waitForJob(server, body.job.id);
    expect(job.status).toBe('failed');
    expect(job.error!.code).toBe('disconnected');
    expect((await server.api<{ snapshots: unknown[] }>('GET', '/v1/snapshots?plan=killed-agent')).body.snapshots).toHaveLength(0);
    const manifests = await readdir(join(server.dataDir, 'store/snapshots')).catch(() => []);
    expect(manifests).toHaveLength(0);
    // Back online, the agent runs the automatic retry of the cut backup, which completes.
    await agent.start();
    let retry: JobLike | undefined;
    await waitUntil(async () => {
      retry = (await server.api<{ jobs: JobLike[] }>('GET', '/v1/jobs?plan=killed-agent')).body.jobs.find((j) => j.trigger === 'retry 1');
      return retry !== undefined && ['succeeded', 'failed'].includes(retry.status);
    }, 'the retry to finish', 60_000);
    expect(retry!.status).toBe('succeeded');
  });

  it('keeps the catalog consistent when the server is killed mid-upload, and the next run succeeds', async () => {
    // A new mtime: the files cache would otherwise reuse the whole file unread and the backup be over at once.
    const now = new Date();
    await utimes(join(big, 'data.bin'), now, now);
    const { body } = await server.api<{ job: JobLike }>('POST', '/v1/plans/killed-agent/backup');
    await waitUntil(async () => ((await server.api<{ job: JobLike }>('GET', `/v1/jobs/${body.job.id}`)).body.job.progress?.bytes ?? 0) > 0, 'upload under way');
    const port = Number(new URL(server.url).port);
    server.proc.child.kill('SIGKILL');
    await server.proc.exited;
    server = await startTestServer(server.dataDir, port);
    const job = (await server.api<{ job: JobLike }>('GET', `/v1/jobs/${body.job.id}`)).body.job;
    expect(job.status).toBe('failed');
    expect(job.error!.code).toBe('server_restarted');
    expect((await server.api<{ snapshots: unknown[] }>('GET', '/v1/snapshots?plan=killed-agent')).body.snapshots).toHaveLength(1);
    // The agent reconnects by itself (backoff), and the next run completes.
    await waitUntil(async () => (await server.api<{ agents: { online: boolean }[] }>('GET', '/v1/agents')).body.agents[0]!.online, 'agent back online', 60_000);
    const next = await server.admin(['backup', 'now', 'killed-agent', '--wait']);
    expect(next.code, next.stderr).toBe(0);
    expect((await server.api<{ snapshots: unknown[] }>('GET', '/v1/snapshots?plan=killed-agent')).body.snapshots).toHaveLength(2);
  });

  it('refuses an unauthenticated WebSocket upgrade with 401 before any 101', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`${server.url.replace('http', 'ws')}/v1/agent/connect`, { headers: { Authorization: 'Bearer agt_nobody.secret' } });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => reject(new Error('upgrade accepted')));
      ws.on('error', () => undefined);
    });
    expect(status).toBe(401);
  });

  async function connectAs(configPath: string): Promise<WebSocket> {
    const config = JSON.parse(await readFile(configPath, 'utf8')) as { agentId: string; secret: string };
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}/v1/agent/connect`, { headers: { Authorization: `Bearer ${config.agentId}.${config.secret}` } });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    return ws;
  }

  it('closes a connection that sends a malformed message or an oversized frame, and stays up', async () => {
    const extra = await enrollAgent(server, dir.path, 'raw-peer');
    const closed = (ws: WebSocket) => new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));

    const ws1 = await connectAs(extra.configPath);
    const c1 = closed(ws1);
    ws1.send(JSON.stringify({ v: PROTOCOL_VERSION, id: 'x', type: 'job.finished', payload: { nonsense: true } }));
    expect(await c1).toBe(1008);

    const ws2 = await connectAs(extra.configPath);
    const c2 = closed(ws2);
    ws2.on('error', () => undefined);
    ws2.send(Buffer.alloc(9 * 1024 * 1024));
    expect(await c2).toBe(1009);

    await waitUntil(() => /rejected a malformed message/.test(server.proc.output()), 'the server to log the malformed message');
    expect((await fetch(`${server.url}/v1/health`)).status).toBe(200);
    expect(server.proc.child.exitCode).toBeNull();
  });

  it('refuses a bad or reused enrollment token, and a revoked agent, with clear messages', async () => {
    const bad = await runCli(BIN.agent, ['enroll', '--server', server.url, '--token', 'lbe_wrong', '--name', 'x1', '--config', join(dir.path, 'x1.json')]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/unknown enrollment token/);

    const { body } = await server.api<{ token: string }>('POST', '/v1/tokens', { expires: '1h' });
    const first = await runCli(BIN.agent, ['enroll', '--server', server.url, '--token', body.token, '--name', 'x2', '--config', join(dir.path, 'x2.json')]);
    expect(first.code, first.stderr).toBe(0);
    const reused = await runCli(BIN.agent, ['enroll', '--server', server.url, '--token', body.token, '--name', 'x3', '--config', join(dir.path, 'x3.json')]);
    expect(reused.code).not.toBe(0);
    expect(reused.stderr).toMatch(/already used/);

    expect((await server.api('POST', '/v1/agents/x2/revoke')).status).toBe(200);
    const run = startProcess(BIN.agent, ['run', '--config', join(dir.path, 'x2.json')]);
    expect(await run.exited).toBe(78);
    expect(run.output()).toMatch(/revoked/);
  });

  it('writes the agent config 0600', async () => {
    expect((await stat(agent.configPath)).mode & 0o777).toBe(0o600);
  });
});

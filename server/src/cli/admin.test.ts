import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentView, JobView, SnapshotView } from '@lifeboat/shared';
import { jobFixture } from './job-fixture.suite.js';
import { main, type MainDeps } from './admin.js';

const ADMIN_TOKEN = 'adm_s3cr3t-token-value';
const SERVER = 'http://lifeboat.test:7400';

function job(overrides: Partial<JobView> = {}): JobView {
  return jobFixture({ id: 'job_abc', planId: 'web', agentName: 'web-1', createdAt: '2025-01-02T03:00:00.000Z', ...overrides });
}

const agent: AgentView = {
  id: 'agt_1',
  name: 'web-1',
  labels: { role: 'web' },
  online: true,
  hostname: 'web-1.example',
  version: '0.1.0',
  tools: [],
  createdAt: '2025-01-01T00:00:00.000Z',
  lastSeenAt: '2025-01-02T00:00:00.000Z',
  revokedAt: null,
};

const snapshot: SnapshotView = {
  id: 'snap_1',
  planId: 'web',
  agentName: 'web-1',
  jobId: 'job_abc',
  status: 'complete',
  createdAt: '2025-01-02T03:05:00.000Z',
  startedAt: '2025-01-02T03:00:00.000Z',
  durationMs: 300_000,
  size: 3 * 1024 * 1024,
  artifacts: [
    {
      id: 'art_1',
      step: 0,
      kind: 'files',
      name: 'files-0',
      size: 3 * 1024 * 1024,
      sha256: 'a'.repeat(64),
      chunkCount: 3,
      metadata: { kind: 'files', paths: ['/srv/www'], entries: 12, files: 10, directories: 2, symlinks: 0, fileBytes: 3_000_000 },
    },
  ],
};

interface Recorded {
  method: string;
  path: string;
  query: string;
  authorization: string | undefined;
  body: unknown;
}

/** A stand-in for the server: canned answers, and a log of what the CLI asked. */
function fakeServer(configure: (app: Hono) => void = () => {}) {
  const requests: Recorded[] = [];
  const app = new Hono();
  app.use('*', async (c, next) => {
    const url = new URL(c.req.url);
    const text = c.req.method === 'GET' ? '' : await c.req.text();
    requests.push({ method: c.req.method, path: url.pathname, query: url.search, authorization: c.req.header('authorization'), body: text ? JSON.parse(text) : undefined });
    if (c.req.header('authorization') !== `Bearer ${ADMIN_TOKEN}`) {
      return c.json({ error: { code: 'unauthorized', message: 'missing or wrong admin token' } }, 401);
    }
    await next();
  });
  configure(app);
  const fetch = async (url: string, init: RequestInit) => app.request(url, init);
  return { app, requests, fetch };
}

class Buffer {
  text = '';
  constructor(readonly isTTY = false) {}
  write(chunk: string) {
    this.text += chunk;
    return true;
  }
}

async function run(args: string[], deps: MainDeps & { token?: string | null } = {}) {
  const stdout = new Buffer();
  const stderr = new Buffer();
  const { token = ADMIN_TOKEN, ...rest } = deps;
  const env: Record<string, string> = { LIFEBOAT_SERVER: SERVER };
  if (token !== null) env.LIFEBOAT_TOKEN = token;
  let clock = Date.parse('2025-01-02T03:00:00Z');
  const code = await main(['node', 'lifeboat', ...args], {
    env,
    stdout,
    stderr,
    sleep: async (ms) => {
      clock += ms;
    },
    now: () => clock,
    fetch: async () => {
      throw new Error('no fetch expected in this test');
    },
    ...rest,
  });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lifeboat-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function planFile(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

describe('lifeboat (admin CLI)', () => {
  describe('connection and token', () => {
    it('says how to get the admin token when none is given, without calling the server', async () => {
      const server = fakeServer();
      const result = await run(['agents', 'list'], { token: null, fetch: server.fetch });
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('pass --token or set LIFEBOAT_TOKEN');
      expect(result.stderr).toContain('DATA/admin-token');
      expect(server.requests).toHaveLength(0);
    });

    it('sends the token as a bearer header, and takes --server and --token after the subcommand too', async () => {
      const server = fakeServer((app) => app.get('/v1/agents', (c) => c.json({ agents: [agent] })));
      const result = await run(['agents', 'list', '--server', 'http://other.test:9000/', '--token', ADMIN_TOKEN], { token: null, fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(server.requests[0]?.authorization).toBe(`Bearer ${ADMIN_TOKEN}`);
      expect(result.stdout).toMatch(/NAME\s+STATE/);
      expect(result.stdout).toMatch(/web-1\s+online\s+web-1\.example\s+0\.1\.0\s+role=web/);
    });

    it('explains a refused token and never prints the token itself', async () => {
      const server = fakeServer();
      const result = await run(['plan', 'list'], { token: 'wrong-token-123', fetch: server.fetch });
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toBe('the server refused the admin token (401); check --token / LIFEBOAT_TOKEN');
      expect(result.stdout + result.stderr).not.toContain('wrong-token-123');
    });

    it('says in one line that the server cannot be reached when nothing listens', async () => {
      const probe = createServer();
      await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
      const { port } = probe.address() as AddressInfo;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      const url = `http://127.0.0.1:${port}`;
      const result = await run(['--server', url, 'jobs', 'list'], { fetch: (u, init) => fetch(u, init) });
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(`cannot reach the Lifeboat server at ${url}: ECONNREFUSED — is it running? (lifeboat-server start)\n`);
    });

    it('refuses a --server that is not an http(s) URL as a usage error', async () => {
      const result = await run(['--server', 'ftp://x', 'agents', 'list']);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('http:// or https://');
    });

    it('reports a response that does not match the API schema instead of printing nonsense', async () => {
      const server = fakeServer((app) => app.get('/v1/jobs/:id', (c) => c.json({ job: { id: 'job_abc', status: 'exploded' } })));
      const result = await run(['jobs', 'show', 'job_abc'], { fetch: server.fetch });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('unexpected response from GET /v1/jobs/job_abc');
      expect(result.stderr).toContain('job.status');
    });
  });

  describe('help and usage', () => {
    it.each([
      [['--help'], 'Usage: lifeboat [options] [command]'],
      [['plan', 'apply', '--help'], 'Usage: lifeboat plan apply [options] <file>'],
      [['backup', 'now', '--help'], 'lifeboat backup now chatwoot-prod --wait'],
      [['restore', '--help'], '--to <dir>'],
      [['jobs', 'list', '--help'], '--status <status>'],
      [['help', 'snapshots'], 'Usage: lifeboat snapshots [options] [command]'],
    ])('prints help for %j and exits 0', async (args, expected) => {
      const result = await run(args);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain(expected);
    });

    it('exits 2 on an unknown command, a missing argument or a bad option value', async () => {
      expect((await run(['frobnicate'])).code).toBe(2);
      const missing = await run(['plan', 'show']);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("missing required argument 'id'");
      const badLimit = await run(['jobs', 'list', '--limit', 'lots']);
      expect(badLimit.code).toBe(2);
      expect(badLimit.stderr).toContain('a whole number of at least 1');
      expect((await run(['jobs', 'list', '--status', 'exploded'])).code).toBe(2);
    });
  });

  describe('token create', () => {
    it('prints the token and the one-line enroll command for this server', async () => {
      const server = fakeServer((app) => app.post('/v1/tokens', (c) => c.json({ token: 'lbe_enroll123', expiresAt: '2025-01-03T03:00:00.000Z' })));
      const result = await run(['token', 'create', '--expires', '2h'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(server.requests[0]?.body).toEqual({ expires: '2h' });
      expect(result.stdout).toContain('lbe_enroll123');
      expect(result.stdout).toContain(`lifeboat-agent enroll --server ${SERVER} --token lbe_enroll123 --name <NAME>`);
      expect(result.stdout + result.stderr).not.toContain(ADMIN_TOKEN);
    });

    it('refuses a malformed --expires before calling the server', async () => {
      const result = await run(['token', 'create', '--expires', 'tomorrow']);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('--expires must be a duration');
    });
  });

  describe('plan apply', () => {
    it('lists every local problem by path and sends nothing', async () => {
      const file = await planFile(
        'bad.yaml',
        ['plans:', '  - id: web', '    agent: web-1', '    rpo: soon', '    steps:', '      - files: { paths: [/srv/www] }', '      - files: {}', ''].join('\n'),
      );
      const server = fakeServer();
      const result = await run(['plan', 'apply', file], { fetch: server.fetch });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('is not a valid plan file (2 problems):');
      expect(result.stderr).toContain('  plans[0].steps[1].files.paths: required');
      expect(result.stderr).toMatch(/ {2}plans\[0\]\.rpo: /);
      expect(server.requests).toHaveLength(0);
    });

    it('reports a YAML syntax error with its line', async () => {
      const file = await planFile('syntax.yml', 'plans:\n  - id: web\n    id: again\n');
      const result = await run(['plan', 'apply', file]);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('Map keys must be unique at line 3');
    });

    it('refuses a file it cannot tell the format of, and a missing file', async () => {
      expect((await run(['plan', 'apply', await planFile('plans.txt', 'x')])).code).toBe(2);
      const missing = await run(['plan', 'apply', join(dir, 'nope.yaml')]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('no such file');
    });

    it('sends a valid file as written and prints what was created, updated and unchanged', async () => {
      const file = await planFile('good.json', JSON.stringify({ plans: [{ id: 'web', agent: 'web-1', steps: [{ files: { paths: ['/srv/www'] } }] }] }));
      const server = fakeServer((app) => app.post('/v1/plans', (c) => c.json({ created: ['web'], updated: [], unchanged: ['db'] })));
      const result = await run(['plan', 'apply', file], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(server.requests[0]?.body).toEqual({ plans: [{ id: 'web', agent: 'web-1', steps: [{ files: { paths: ['/srv/www'] } }] }] });
      expect(result.stdout).toContain('created    web');
      expect(result.stdout).toContain('unchanged  db');
      expect(result.stdout).toContain('1 created, 0 updated, 1 unchanged');
    });

    it("prints the server's problems one per line when it refuses the file", async () => {
      const file = await planFile('remote.yaml', 'plans:\n  - id: web\n    agent: ghost\n    steps:\n      - files: { paths: [/srv] }\n');
      const server = fakeServer((app) =>
        app.post('/v1/plans', (c) =>
          c.json(
            {
              error: {
                code: 'invalid_plan',
                message: 'the plan file has 1 problem(s); nothing was applied',
                details: ['plans[0].agent: no enrolled agent named "ghost"'],
              },
            },
            400,
          ),
        ),
      );
      const result = await run(['plan', 'apply', file], { fetch: server.fetch });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('error: the plan file has 1 problem(s); nothing was applied');
      expect(result.stderr).toContain('  plans[0].agent: no enrolled agent named "ghost"');
    });
  });

  describe('plan list, show, delete', () => {
    const view = {
      plan: { id: 'web', agent: 'web-1', schedule: '0 3 * * *', rpo: '26h', timeout: '12h', window: '24h', steps: [{ files: { paths: ['/srv/www'], exclude: [] } }], compression: 3 },
      createdAt: '2025-01-01T00:00:00.000Z',
      updatedAt: '2025-01-01T00:00:00.000Z',
    };

    it('shows a plan as YAML that plan apply would read back', async () => {
      const server = fakeServer((app) => app.get('/v1/plans/:id', (c) => c.json(view)));
      const result = await run(['plan', 'show', 'web'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('plans:\n  - id: web\n    agent: web-1');
      expect(result.stdout).toContain('schedule: 0 3 * * *');
    });

    it('lists plans as JSON that parses', async () => {
      const server = fakeServer((app) => app.get('/v1/plans', (c) => c.json({ plans: [view] })));
      const result = await run(['plan', 'list', '--json'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout)).toEqual([view]);
    });

    it('prints the server message for an unknown plan', async () => {
      const server = fakeServer((app) => app.delete('/v1/plans/:id', (c) => c.json({ error: { code: 'not_found', message: 'no plan "zzz"' } }, 404)));
      const result = await run(['plan', 'delete', 'zzz'], { fetch: server.fetch });
      expect(result.code).toBe(1);
      expect(result.stderr).toBe('error: no plan "zzz"\n');
    });
  });

  describe('backup now', () => {
    /** Answers GET /v1/jobs/job_abc with each state in turn, then the last one forever. */
    function jobSequence(states: JobView[]) {
      let i = 0;
      return fakeServer((app) => {
        app.post('/v1/plans/:id/backup', (c) => c.json({ job: job() }));
        app.get('/v1/jobs/:id', (c) => c.json({ job: states[Math.min(i++, states.length - 1)] }));
      });
    }

    it('prints the job id and returns without --wait', async () => {
      const server = jobSequence([]);
      const result = await run(['backup', 'now', 'web'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('job_abc');
      expect(server.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['POST /v1/plans/web/backup']);
    });

    it('with --wait, shows progress and exits 1 with the error and warnings when the job fails', async () => {
      const started = '2025-01-02T03:00:01.000Z';
      const server = jobSequence([
        job({ status: 'running', startedAt: started, progress: { phase: 'files', bytes: 1024 * 1024, at: '2025-01-02T03:00:02.000Z' } }),
        job({ status: 'running', startedAt: started, progress: { phase: 'files', bytes: 3 * 1024 * 1024, at: '2025-01-02T03:00:04.000Z' } }),
        job({
          status: 'failed',
          startedAt: started,
          finishedAt: '2025-01-02T03:00:09.000Z',
          error: { code: 'source_failed', message: 'tar: /srv/www: Permission denied' },
          warnings: ['file changed as we read it: /srv/www/log'],
        }),
      ]);
      // Polls 10 s apart, so a log (not a terminal) gets a line for each of them.
      const result = await run(['backup', 'now', 'web', '--wait'], { fetch: server.fetch, pollIntervalMs: 10_000 });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('job_abc running: files 1.00 MiB');
      expect(result.stderr).toContain('files 3.00 MiB, 1.00 MiB/s');
      expect(result.stderr).toContain('backup job_abc failed in 8.0s: source_failed: tar: /srv/www: Permission denied');
      expect(result.stderr).toContain('warning: file changed as we read it: /srv/www/log');
    });

    it('with --wait, prints the snapshot and exits 0 when the job succeeds', async () => {
      const server = jobSequence([
        job({ status: 'dispatched' }),
        job({ status: 'succeeded', startedAt: '2025-01-02T03:00:00.000Z', finishedAt: '2025-01-02T03:01:00.000Z', snapshotId: 'snap_1' }),
      ]);
      const result = await run(['backup', 'now', 'web', '--wait'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('backup job_abc succeeded in 1m0s: snapshot snap_1');
    });

    it('redraws progress in place on a terminal', async () => {
      const server = jobSequence([job({ status: 'running' }), job({ status: 'succeeded', snapshotId: 'snap_1' })]);
      const stderr = new Buffer(true);
      const result = await run(['backup', 'now', 'web', '--wait'], { fetch: server.fetch, stderr });
      expect(result.code).toBe(0);
      expect(stderr.text).toContain('\r\x1b[2Kjob_abc running');
    });

    it('prints the conflict when the plan already has a job', async () => {
      const server = fakeServer((app) =>
        app.post('/v1/plans/:id/backup', (c) =>
          c.json({ error: { code: 'conflict', message: 'plan web already has job job_old running; a plan never runs twice at once' } }, 409),
        ),
      );
      const result = await run(['backup', 'now', 'web', '--wait'], { fetch: server.fetch });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('plan web already has job job_old running');
    });
  });

  describe('jobs, snapshots and agents', () => {
    it('passes the filters of jobs list as query parameters and prints JSON that parses', async () => {
      const jobs = [job({ status: 'failed', error: { code: 'timeout', message: 'too slow' } })];
      const server = fakeServer((app) => app.get('/v1/jobs', (c) => c.json({ jobs })));
      const result = await run(['jobs', 'list', '--plan', 'web', '--agent', 'web-1', '--status', 'failed', '--limit', '5', '--json'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(new URLSearchParams(server.requests[0]?.query)).toEqual(new URLSearchParams({ plan: 'web', agent: 'web-1', status: 'failed', limit: '5' }));
      expect(JSON.parse(result.stdout)).toEqual(jobs);
    });

    it('shows a failed job with its error, warnings and summary', async () => {
      const failed = job({
        status: 'failed',
        error: { code: 'disconnected', message: 'the agent went away' },
        warnings: ['one', 'two'],
        summary: 'restored 0 files',
        progress: { phase: 'upload', bytes: 2048, totalBytes: 4096, at: '2025-01-02T03:00:05.000Z' },
      });
      const server = fakeServer((app) => app.get('/v1/jobs/:id', (c) => c.json({ job: failed })));
      const result = await run(['jobs', 'show', 'job_abc'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/error\s+disconnected: the agent went away/);
      expect(result.stdout).toContain('warnings (2):\n  - one\n  - two');
      expect(result.stdout).toContain('summary:\n  restored 0 files');
      expect(result.stdout).toContain('upload, 2.00 KiB of 4.00 KiB (50%)');
    });

    it('lists snapshots with time, size and duration, and as JSON', async () => {
      const server = fakeServer((app) => app.get('/v1/snapshots', (c) => c.json({ snapshots: [snapshot] })));
      const table = await run(['snapshots', 'list', '--plan', 'web'], { fetch: server.fetch });
      expect(table.code).toBe(0);
      expect(server.requests[0]?.query).toBe('?plan=web');
      const [header, row] = table.stdout.trimEnd().split('\n');
      expect(header).toMatch(/^ID\s+PLAN\s+AGENT\s+TIME\s+SIZE\s+STATUS\s+DURATION$/);
      expect(row).toMatch(/^snap_1\s+web\s+web-1\s+2025-01-02T03:05:00Z\s+3\.00 MiB\s+complete\s+5m0s$/);
      const json = await run(['snapshots', 'list', '--json'], { fetch: server.fetch });
      expect(JSON.parse(json.stdout)).toEqual([snapshot]);
    });

    it('shows a snapshot with its artifacts', async () => {
      const server = fakeServer((app) => app.get('/v1/snapshots/:id', (c) => c.json({ snapshot })));
      const result = await run(['snapshots', 'show', 'snap_1'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('[0] files files-0: 3.00 MiB in 3 chunks');
      expect(result.stdout).toContain('a'.repeat(64));
      expect(result.stdout).toContain('10 files, 2 directories, 0 symlinks');
    });

    it('lists agents as JSON and revokes one', async () => {
      const server = fakeServer((app) => {
        app.get('/v1/agents', (c) => c.json({ agents: [agent] }));
        app.post('/v1/agents/:name/revoke', (c) => c.json({ agent: { ...agent, online: false, revokedAt: '2025-01-02T04:00:00.000Z' } }));
      });
      const list = await run(['agents', 'list', '--json'], { fetch: server.fetch });
      expect(JSON.parse(list.stdout)).toEqual([agent]);
      const revoke = await run(['agents', 'revoke', 'web-1'], { fetch: server.fetch });
      expect(revoke.code).toBe(0);
      expect(revoke.stdout).toBe('revoked agent web-1 at 2025-01-02T04:00:00Z\n');
    });
  });

  describe('restore', () => {
    it('refuses a relative --to before calling the server', async () => {
      const result = await run(['restore', 'snap_1', '--agent', 'web-1', '--to', 'restore-here']);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('--to: must be an absolute path');
    });

    it('requests the restore, waits, and prints the summary', async () => {
      const done = job({ id: 'job_r', kind: 'restore', planId: null, status: 'succeeded', summary: 'restored 10 files (2.9 MiB) into /srv/restore' });
      const server = fakeServer((app) => {
        app.post('/v1/restores', (c) => c.json({ job: job({ id: 'job_r', kind: 'restore', planId: null }) }));
        app.get('/v1/jobs/:id', (c) => c.json({ job: done }));
      });
      const result = await run(['restore', 'snap_1', '--agent', 'web-1', '--to', '/srv/restore', '--force'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      expect(server.requests[0]?.body).toEqual({ snapshotId: 'snap_1', agent: 'web-1', to: '/srv/restore', force: true, rewriteHosts: [] });
      expect(result.stdout).toContain('restore job_r succeeded');
      expect(result.stdout).toContain('restored 10 files (2.9 MiB) into /srv/restore');
    });

    it('exits 1 when the restore fails', async () => {
      const failed = job({ id: 'job_r', kind: 'restore', status: 'failed', error: { code: 'restore_refused', message: '/srv/restore is not empty; pass --force' } });
      const server = fakeServer((app) => {
        app.post('/v1/restores', (c) => c.json({ job: job({ id: 'job_r', kind: 'restore' }) }));
        app.get('/v1/jobs/:id', (c) => c.json({ job: failed }));
      });
      const result = await run(['restore', 'snap_1', '--agent', 'web-1', '--to', '/srv/restore'], { fetch: server.fetch });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('restore_refused: /srv/restore is not empty; pass --force');
    });
  });

  describe('stats', () => {
    const figures = { snapshots: 30, bytesIn: 30 * 1024 ** 3, uniqueChunks: 1500, bytesStored: 1.5 * 1024 ** 3, chunksWithoutStoredSize: 0, dedupRatio: 20 };
    const stats = { plans: [{ planId: 'web', ...figures }, { planId: 'idle', snapshots: 0, bytesIn: 0, uniqueChunks: 0, bytesStored: 0, chunksWithoutStoredSize: 0, dedupRatio: null }], total: figures };

    it('prints bytes in, bytes stored and the ratio per plan and in total', async () => {
      const server = fakeServer((app) => app.get('/v1/stats', (c) => c.json(stats)));
      const result = await run(['stats'], { fetch: server.fetch });
      expect(result.code).toBe(0);
      const lines = result.stdout.split('\n');
      expect(lines[0]).toMatch(/^PLAN\s+SNAPSHOTS\s+BYTES IN\s+CHUNKS\s+BYTES STORED\s+RATIO$/);
      expect(lines[1]).toMatch(/^web\s+30\s+30\.0 GiB\s+1500\s+1\.50 GiB\s+20\.00x$/);
      expect(lines[2]).toMatch(/^idle\s+0\s+0 B\s+0\s+0 B\s+-$/);
      expect(lines[3]).toMatch(/^TOTAL\s+30\s+/);
      expect(result.stdout).not.toMatch(/plain size/);
    });

    it('says when stored sizes are partly unknown, and prints JSON that parses', async () => {
      const partial = { ...stats, total: { ...figures, chunksWithoutStoredSize: 12 } };
      const server = fakeServer((app) => app.get('/v1/stats', (c) => c.json(partial)));
      expect((await run(['stats'], { fetch: server.fetch })).stdout).toContain("12 of 1500 chunks are in no pack's index");
      const json = await run(['stats', '--json'], { fetch: server.fetch });
      expect(JSON.parse(json.stdout)).toEqual(partial);
    });
  });
});

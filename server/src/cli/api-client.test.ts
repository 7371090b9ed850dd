import { describe, expect, it } from 'vitest';
import type { JobView } from '@lifeboat/shared';
import { jobFixture } from './job-fixture.suite.js';
import { ApiClient, ApiRequestError, ServerUnreachableError, networkReason, waitForJob } from './api-client.js';

const job = jobFixture({ status: 'running' });

function jsonResponse(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

describe('ApiClient', () => {
  it('encodes path segments and drops a trailing slash from the base URL', async () => {
    const urls: string[] = [];
    const client = new ApiClient({
      baseUrl: 'http://h:1/',
      token: 't',
      fetch: async (url) => {
        urls.push(url);
        return jsonResponse({ job });
      },
    });
    await client.getJob('a/b c');
    expect(urls).toEqual(['http://h:1/v1/jobs/a%2Fb%20c']);
  });

  it('turns an error body into an ApiRequestError with status, code and details', async () => {
    const client = new ApiClient({
      baseUrl: 'http://h:1',
      token: 't',
      fetch: async () => jsonResponse({ error: { code: 'invalid_plan', message: 'bad', details: ['plans[0].id: required'] } }, 400),
    });
    const err = await client.applyPlans({}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiRequestError);
    expect(err).toMatchObject({ status: 400, code: 'invalid_plan', message: 'bad', details: ['plans[0].id: required'] });
  });

  it('names a non-JSON answer (a proxy page) rather than failing to parse it', async () => {
    const client = new ApiClient({ baseUrl: 'http://h:1', token: 't', fetch: async () => new Response('<html>Bad Gateway</html>', { status: 502 }) });
    await expect(client.listPlans()).rejects.toThrow('GET /v1/plans answered 502 with a body that is not JSON');
  });

  it('reports a network failure as unreachable with the system code', async () => {
    const client = new ApiClient({
      baseUrl: 'http://h:1',
      token: 't',
      fetch: async () => {
        throw new TypeError('fetch failed', { cause: Object.assign(new Error('getaddrinfo'), { code: 'ENOTFOUND' }) });
      },
    });
    await expect(client.listAgents()).rejects.toThrow(new ServerUnreachableError('http://h:1', 'ENOTFOUND'));
  });
});

describe('networkReason', () => {
  it('finds the code inside an AggregateError cause', () => {
    const cause = new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })]);
    expect(networkReason(new TypeError('fetch failed', { cause }))).toBe('ECONNREFUSED');
  });

  it('calls an aborted request a timeout', () => {
    expect(networkReason(new DOMException('The operation timed out', 'TimeoutError'))).toBe('timed out');
  });
});

describe('waitForJob', () => {
  it('rides out a short server outage and returns the finished job', async () => {
    const answers: (JobView | Error)[] = [job, new ServerUnreachableError('u', 'ECONNREFUSED'), { ...job, status: 'succeeded' }];
    const seen: string[] = [];
    const final = await waitForJob(
      {
        getJob: async () => {
          const next = answers.shift()!;
          if (next instanceof Error) throw next;
          return next;
        },
      },
      'job_1',
      { sleep: async () => {}, onPoll: (j) => seen.push(j.status) },
    );
    expect(final.status).toBe('succeeded');
    expect(seen).toEqual(['running', 'succeeded']);
  });

  it('gives up after too many unreachable polls', async () => {
    const client = {
      getJob: async (): Promise<JobView> => {
        throw new ServerUnreachableError('u', 'ECONNREFUSED');
      },
    };
    await expect(waitForJob(client, 'job_1', { sleep: async () => {}, maxUnreachablePolls: 2 })).rejects.toBeInstanceOf(ServerUnreachableError);
  });
});

import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, runCli, startProcess, tempDir, waitUntil, type Proc } from './harness.js';

describe('the server over TLS', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: Proc;
  let agent: Proc | undefined;
  let url: string;
  let env: Record<string, string>;
  let cert: string;

  beforeAll(async () => {
    dir = await tempDir('tls');
    cert = join(dir.path, 'cert.pem');
    const key = join(dir.path, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=lifeboat-test', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    const data = join(dir.path, 'server');
    server = startProcess(BIN.server, ['start', '--data', data, '--port', '0', '--tls-cert', cert, '--tls-key', key]);
    [, url] = (await server.waitFor(/listening url=(https:\/\/127\.0\.0\.1:\d+)/)) as unknown as [string, string];
    env = { LIFEBOAT_SERVER: url, LIFEBOAT_TOKEN: (await readFile(join(data, 'admin-token'), 'utf8')).trim(), NODE_EXTRA_CA_CERTS: cert };
  });

  afterAll(async () => {
    await agent?.kill();
    await server?.kill();
    await dir?.cleanup();
  });

  it('serves HTTPS, and an agent that trusts the CA through its config connects over WSS and backs up', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      request(`${url}/v1/health`, { ca: cert ? execFileSync('cat', [cert]) : undefined }, (res) => resolve(res.statusCode ?? 0)).on('error', reject).end();
    });
    expect(status).toBe(200);

    const token = /^\s*(lbe_\S+)/m.exec((await runCli(BIN.admin, ['token', 'create'], env)).stdout)![1]!;
    const config = join(dir.path, 'agent.json');
    const enrolled = await runCli(BIN.agent, ['enroll', '--server', url, '--token', token, '--name', 'tls-1', '--config', config], { NODE_EXTRA_CA_CERTS: cert });
    expect(enrolled.code, enrolled.stderr).toBe(0);
    // The agent itself trusts the server's certificate through caFile, not the environment.
    await writeFile(config, JSON.stringify({ ...JSON.parse(await readFile(config, 'utf8')), caFile: cert }), { mode: 0o600 });
    agent = startProcess(BIN.agent, ['run', '--config', config], { NODE_EXTRA_CA_CERTS: '' });
    await waitUntil(async () => /"online": *true/.test((await runCli(BIN.admin, ['agents', 'list', '--json'], env)).stdout), 'agent online over WSS');

    const data = join(dir.path, 'data');
    await mkdir(data);
    await writeFile(join(data, 'f.txt'), 'over tls');
    await writeFile(join(dir.path, 'plan.json'), JSON.stringify({ plans: [{ id: 'tls', agent: 'tls-1', steps: [{ files: { paths: [data] } }] }] }));
    expect((await runCli(BIN.admin, ['encryption', 'off'], env)).code).toBe(0);
    expect((await runCli(BIN.admin, ['plan', 'apply', join(dir.path, 'plan.json')], env)).code).toBe(0);
    const backup = await runCli(BIN.admin, ['backup', 'now', 'tls', '--wait'], env);
    expect(backup.code, backup.stderr).toBe(0);
  });

  it('an agent that does not trust the certificate is refused with a clear message', async () => {
    const config = join(dir.path, 'agent.json');
    const untrusting = join(dir.path, 'untrusting.json');
    const { caFile: _ignored, ...rest } = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;
    void _ignored;
    await writeFile(untrusting, JSON.stringify(rest), { mode: 0o600 });
    const other = startProcess(BIN.agent, ['run', '--config', untrusting], { NODE_EXTRA_CA_CERTS: '' });
    await other.waitFor(/self.signed|certificate/i, 15_000);
    await other.kill();
  });
});

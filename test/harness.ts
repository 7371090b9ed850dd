import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FsBackend, packKey, readSnapshotManifest, StorePackIndex } from '@lifeboat/shared';

/** End-to-end tests drive the built programs as separate processes, the way an operator does. */
export const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const BIN = {
  server: join(ROOT, 'server/bin/lifeboat-server'),
  admin: join(ROOT, 'server/bin/lifeboat.js'),
  agent: join(ROOT, 'agent/bin/lifeboat-agent'),
};

export interface Proc {
  child: ChildProcess;
  output: () => string;
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
  exited: Promise<number | null>;
  /** Peak resident memory (VmHWM) in bytes, read from /proc while the process runs. */
  peakRss: () => Promise<number>;
  kill: (signal?: NodeJS.Signals) => Promise<number | null>;
}

export function startProcess(script: string, args: string[], env: Record<string, string> = {}): Proc {
  // The programs as installed: their own launchers (the agent's and server's set allocator options first).
  const child = spawn(script, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters: (() => void)[] = [];
  const onData = (d: Buffer) => {
    out += d.toString();
    if (process.env.LIFEBOAT_TEST_VERBOSE) process.stderr.write(d);
    for (const w of waiters.splice(0)) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((res) => child.on('exit', (code, signal) => res(code ?? (signal ? -1 : null))));
  return {
    child,
    output: () => out,
    exited,
    waitFor(pattern, timeoutMs = 30_000) {
      return new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`timed out waiting for ${pattern} in output:\n${out.slice(-3000)}`)), timeoutMs);
        const check = () => {
          const m = out.match(pattern);
          if (m) {
            clearTimeout(timer);
            res(m);
          } else waiters.push(check);
        };
        check();
      });
    },
    async peakRss() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
      return kb * 1024;
    },
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCli(script: string, args: string[], env: Record<string, string> = {}, timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((res, rej) => {
    const child = spawn(script, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new Error(`${script} ${args.join(' ')} timed out\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      res({ code: code ?? -1, stdout, stderr });
    });
  });
}

export async function tempDir(prefix: string): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `lifeboat-${prefix}-`));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

export interface TestServer {
  proc: Proc;
  url: string;
  token: string;
  dataDir: string;
  api: <T = unknown>(method: string, path: string, body?: unknown, token?: string) => Promise<{ status: number; body: T }>;
  admin: (args: string[]) => Promise<CliResult>;
}

/**
 * A server on `dataDir`. A new repository takes no backup until its encryption is chosen: unless told to leave
 * it `undecided`, this chooses "off" as an owner would (`lifeboat encryption off`); a test that wants encryption
 * runs `lifeboat encryption init`, which may still follow.
 */
export async function startTestServer(dataDir: string, port = 0, extraArgs: string[] = [], options: { undecided?: boolean } = {}): Promise<TestServer> {
  const proc = startProcess(BIN.server, ['start', '--data', dataDir, '--port', String(port), '--host', '127.0.0.1', ...extraArgs]);
  const [, url] = await proc.waitFor(/listening url=(http:\/\/127\.0\.0\.1:\d+)/);
  const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  const api = async <T>(method: string, path: string, body?: unknown, auth = token) => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${auth}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as T };
  };
  const admin = (args: string[]) => runCli(BIN.admin, args, { LIFEBOAT_SERVER: url!, LIFEBOAT_TOKEN: token });
  const { body: encryption } = await api<{ state: string }>('GET', '/v1/encryption');
  if (encryption.state === 'undecided' && !options.undecided) {
    const off = await api('POST', '/v1/encryption/off');
    if (off.status !== 200) throw new Error(`lifeboat encryption off failed: ${JSON.stringify(off.body)}`);
  }
  return { proc, url: url!, token, dataDir, api, admin };
}

export interface TestAgent {
  name: string;
  configPath: string;
  proc: Proc | null;
  start: () => Promise<Proc>;
}

/** `env`: more environment for the agent's process, at every start (TMPDIR for a scratch directory of its own, say). */
export async function enrollAgent(server: TestServer, dir: string, name: string, labels: string[] = [], env: Record<string, string> = {}): Promise<TestAgent> {
  const { body } = await server.api<{ token: string }>('POST', '/v1/tokens', { expires: '1h' });
  const configPath = join(dir, `${name}.json`);
  const result = await runCli(BIN.agent, ['enroll', '--server', server.url, '--token', body.token, '--name', name, '--config', configPath, '--state-dir', join(dir, `${name}-state`), ...labels.flatMap((l) => ['--label', l])]);
  if (result.code !== 0) throw new Error(`enroll ${name} failed: ${result.stderr}`);
  const agent: TestAgent = {
    name,
    configPath,
    proc: null,
    async start() {
      agent.proc = startProcess(BIN.agent, ['run', '--config', configPath], { LIFEBOAT_LOG_LEVEL: 'info', ...env });
      await waitUntil(async () => {
        const { body: list } = await server.api<{ agents: { name: string; online: boolean }[] }>('GET', '/v1/agents');
        return list.agents.some((a) => a.name === name && a.online);
      }, `agent ${name} online`);
      return agent.proc;
    },
  };
  return agent;
}

export async function waitUntil(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

export interface JobLike {
  id: string;
  status: string;
  trigger: string;
  summary: string | null;
  error: { code: string; message: string } | null;
  snapshotId: string | null;
  progress: { bytes: number } | null;
  warnings: string[];
}

export async function waitForJob(server: TestServer, jobId: string, timeoutMs = 120_000): Promise<JobLike> {
  let job: JobLike | undefined;
  await waitUntil(async () => {
    // Held by the server until the job ends (or a second passes): the end is seen at once.
    job = (await server.api<{ job: JobLike }>('GET', `/v1/jobs/${jobId}?wait=1000`)).body.job;
    return ['succeeded', 'failed', 'cancelled'].includes(job.status);
  }, `job ${jobId} to finish`, timeoutMs, 0);
  return job!;
}

/** Starts a plan's backup through the API and waits for the job to end. */
export async function backupNow(server: TestServer, plan: string, timeoutMs = 300_000): Promise<JobLike> {
  const { body } = await server.api<{ job: JobLike }>('POST', `/v1/plans/${plan}/backup`);
  return waitForJob(server, body.job.id, timeoutMs);
}

export interface Fleet {
  server: TestServer;
  agents: TestAgent[];
  /** Stops the agents and the server. */
  stop: () => Promise<void>;
}

/** A server and running agents in `dir` (names, each optionally with labels), the setup most e2e tests share. */
export async function startFleet(dir: string, agents: { name: string; labels?: string[] }[]): Promise<Fleet> {
  const server = await startTestServer(join(dir, 'server'));
  const enrolled: TestAgent[] = [];
  for (const a of agents) enrolled.push(await enrollAgent(server, dir, a.name, a.labels ?? []));
  for (const a of enrolled) await a.start();
  return {
    server,
    agents: enrolled,
    async stop() {
      for (const a of enrolled) await a.proc?.kill();
      await server.proc.kill();
    },
  };
}

/** The chunk ids a snapshot's manifest in a filesystem store lists, artifact by artifact, in order. */
export async function snapshotChunkIds(storeDir: string, snapshotId: string): Promise<string[]> {
  const read = readSnapshotManifest(await readFile(join(storeDir, 'snapshots', `${snapshotId}.json`)));
  if (!read.ok) throw new Error(`the manifest of ${snapshotId} does not read: ${read.problems.join('; ')}`);
  return read.manifest.artifacts.flatMap((a) => a.chunks.map((c) => c.id));
}

/**
 * Flips one byte of a chunk where it lies in its pack (found through the store's index objects), as a failing
 * disk would; `undo` flips it back.
 */
export async function damageStoredChunk(storeDir: string, chunkId: string): Promise<{ undo: () => Promise<void> }> {
  const at = (await StorePackIndex.load(new FsBackend(storeDir))).locate(chunkId);
  if (!at) throw new Error(`no pack index in ${storeDir} names chunk ${chunkId}`);
  const path = join(storeDir, packKey(at.pack));
  const flip = async () => {
    const bytes = await readFile(path);
    bytes[at.offset + at.length - 10]! ^= 0x55;
    await writeFile(path, bytes);
  };
  await flip();
  return { undo: flip };
}

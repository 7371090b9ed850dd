// The tools the benchmark compares, behind one small interface:
//   setup()                       fresh repositories under out/<tool>/
//   backup(set, src)              → { wall, cpu, rss: { process: bytes }, note? }
//   restore(set, src, target)     → { wall, cpu, rss, restoredRoot }
//   storedBytes(set)              bytes the repository holds for that set
//   stop()
// `set` is 'corpus' or 'db' (the dump series): each has its own repository (Lifeboat: its own plans on one server).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { output, processCpu, processPeakRss, resetPeakRss, startTimed, threadCpu, threadCpuDelta, timed, treeBytes } from './measure.mjs';

const ROOT = resolve(new URL('..', import.meta.url).pathname);
const bins = (root) => ({
  // The entry points themselves (node runs them, so --cpu-prof can be added), with the node flags and the
  // environment defaults of the launchers in server/bin and agent/bin (launcherSettings).
  server: join(root, 'server/dist/cli/server-main.js'),
  admin: join(root, 'server/bin/lifeboat.js'),
  agent: join(root, 'agent/dist/cli/main.js'),
});
/**
 * What a launcher (server/bin/lifeboat-server, agent/bin/lifeboat-agent) gives node: the flags of its `exec node`
 * line, and the environment defaults it sets with `: "${NAME:=value}"` (malloc settings, the server's thread pool).
 */
function launcherSettings(root, launcher) {
  const script = readFileSync(join(root, launcher), 'utf8');
  const exec = /^exec node (.*)$/m.exec(script);
  if (!exec) throw new Error(`${launcher}: no "exec node" line to take node's flags from`);
  const env = Object.fromEntries([...script.matchAll(/\$\{(\w+):=([^}]*)\}/g)].map((m) => [m[1], m[2]]));
  return { flags: exec[1].split(/\s+/).filter((word) => word.startsWith('--')), env };
}
/** Extra node flags for the agent and the server, for experiments (BENCH_AGENT_FLAGS="--trace-gc", BENCH_SERVER_FLAGS="--cpu-prof"); none in a recorded run. */
const EXTRA_AGENT_FLAGS = (process.env.BENCH_AGENT_FLAGS ?? '').split(' ').filter(Boolean);
const EXTRA_SERVER_FLAGS = (process.env.BENCH_SERVER_FLAGS ?? '').split(' ').filter(Boolean);

/**
 * Copies the built programs (bin, dist, package.json, the node_modules links; not src) to `dest`, so that a
 * rebuild by someone else during a long run does not change the code under the running server and agent
 * (the agent starts its encoder workers lazily, and every CLI call loads the dist afresh). Returns the copy's
 * root and a digest of its dist files, which names the build that was measured.
 */
export function snapshotBuild(dest) {
  rmSync(dest, { recursive: true, force: true });
  mkdirSync(dest, { recursive: true });
  const hash = createHash('sha256');
  for (const pkg of ['shared', 'agent', 'server']) {
    for (const part of ['package.json', 'bin', 'dist', 'node_modules', 'drizzle']) {
      const from = join(ROOT, pkg, part);
      if (existsSync(from)) cpSync(from, join(dest, pkg, part), { recursive: true, verbatimSymlinks: true });
    }
    const dist = join(dest, pkg, 'dist');
    for (const rel of readdirSync(dist, { recursive: true }).map(String).sort()) {
      if (rel.endsWith('.js')) hash.update(rel).update(readFileSync(join(dist, rel)));
    }
  }
  cpSync(join(ROOT, 'package.json'), join(dest, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(dest, 'node_modules'));
  return { root: dest, digest: hash.digest('hex').slice(0, 12) };
}
const PASSWORD = 'benchmark passphrase, not a secret';

export class Restic {
  name = 'restic';
  constructor(out) {
    this.dir = join(out, 'restic');
    this.env = { RESTIC_PASSWORD: PASSWORD, RESTIC_CACHE_DIR: join(this.dir, 'cache') };
  }
  repo(set) {
    return join(this.dir, `${set}-repo`);
  }
  async setup() {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    // Format version 2 (compressed); compression stays at its default, "auto".
    for (const set of ['corpus', 'db']) await timed('restic', ['init', '--repository-version', '2', '-r', this.repo(set)], { env: this.env });
  }
  async backup(set, src) {
    const r = await timed('restic', ['-r', this.repo(set), 'backup', '--quiet', '--host', 'bench', src], { env: this.env });
    return { wall: r.wall, cpu: r.cpu, rss: { restic: r.rss } };
  }
  async restore(set, src, target) {
    const r = await timed('restic', ['-r', this.repo(set), 'restore', 'latest', '--target', target], { env: this.env });
    return { wall: r.wall, cpu: r.cpu, rss: { restic: r.rss }, restoredRoot: join(target, src) };
  }
  storedBytes(set) {
    return treeBytes(this.repo(set));
  }
  repoDir(set) {
    return this.repo(set);
  }
  async stop() {}
}

export class Borg {
  name = 'borg';
  constructor(out, compression) {
    this.dir = join(out, 'borg');
    this.compression = compression;
    this.env = { BORG_PASSPHRASE: PASSWORD, BORG_BASE_DIR: join(this.dir, 'base'), BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes', BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'no' };
    this.archives = { corpus: 0, db: 0 };
  }
  repo(set) {
    return join(this.dir, `${set}-repo`);
  }
  async setup() {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    for (const set of ['corpus', 'db']) await timed('borg', ['init', '--encryption', 'repokey', this.repo(set)], { env: this.env });
  }
  async backup(set, src) {
    const archive = `${set}-${++this.archives[set]}`;
    const r = await timed('borg', ['create', '--compression', this.compression, `${this.repo(set)}::${archive}`, src], { env: this.env });
    return { wall: r.wall, cpu: r.cpu, rss: { borg: r.rss } };
  }
  async restore(set, src, target) {
    mkdirSync(target, { recursive: true });
    const r = await timed('borg', ['extract', `${this.repo(set)}::${set}-${this.archives[set]}`], { env: this.env, cwd: target });
    return { wall: r.wall, cpu: r.cpu, rss: { borg: r.rss }, restoredRoot: join(target, src.slice(1)) };
  }
  storedBytes(set) {
    return treeBytes(this.repo(set));
  }
  repoDir(set) {
    return this.repo(set);
  }
  async stop() {}
}

/** `tar -cf - | zstd -3 -T2`: no deduplication, no encryption; what the disk, tar and zstd allow. */
export class TarZstd {
  name = 'tar|zstd';
  constructor(out) {
    this.dir = join(out, 'tarzstd');
    this.archives = { corpus: [], db: [] };
  }
  async setup() {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
  }
  async backup(set, src) {
    const file = join(this.dir, `${set}-${this.archives[set].length + 1}.tar.zst`);
    const started = process.hrtime.bigint();
    const tar = startTimed('tar', ['-C', dirname(src), '-cf', '-', basename(src)], { stdio: ['ignore', 'pipe', 'pipe'], captureStdout: false });
    const zstd = startTimed('zstd', ['-3', '-T2', '-q', '-f', '-o', file], { stdio: [tar.child.stdout, 'ignore', 'pipe'] });
    const [t, z] = await Promise.all([tar.done, zstd.done]);
    if (t.code !== 0 || z.code !== 0) throw new Error(`tar | zstd failed: ${t.stderr} ${z.stderr}`);
    this.archives[set].push(file);
    return { wall: Number(process.hrtime.bigint() - started) / 1e9, cpu: t.cpu + z.cpu, rss: { tar: t.rss, zstd: z.rss }, note: 'full archive' };
  }
  async restore(set, src, target) {
    mkdirSync(target, { recursive: true });
    const file = this.archives[set].at(-1);
    const started = process.hrtime.bigint();
    const zstd = startTimed('zstd', ['-d', '-q', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'], captureStdout: false });
    const tar = startTimed('tar', ['-C', target, '-xf', '-'], { stdio: [zstd.child.stdout, 'ignore', 'pipe'] });
    const [z, t] = await Promise.all([zstd.done, tar.done]);
    if (t.code !== 0 || z.code !== 0) throw new Error(`zstd -d | tar -x failed: ${z.stderr} ${t.stderr}`);
    return { wall: Number(process.hrtime.bigint() - started) / 1e9, cpu: t.cpu + z.cpu, rss: { zstd: z.rss, tar: t.rss }, restoredRoot: join(target, basename(src)) };
  }
  storedBytes(set) {
    return this.archives[set].reduce((sum, f) => sum + treeBytes(f), 0);
  }
  repoDir(set) {
    return this.archives[set].at(-1) ?? this.dir;
  }
  async stop() {}
}

/**
 * Lifeboat as an operator runs it: a real server and one agent from the built dist, enrolled through the API,
 * plans applied through the API, `lifeboat backup now --wait` and `lifeboat restore` from the admin CLI.
 * CPU is the server's and the agent's (from /proc/<pid>/stat, all threads, before and after each phase) plus
 * the admin CLI's; peak RSS per process is VmHWM, reset at the start of each phase.
 */
export class Lifeboat {
  name = 'lifeboat';
  constructor(out, { encryption = true, cpuProf = false, build = ROOT } = {}) {
    this.dir = join(out, 'lifeboat');
    this.bin = bins(build);
    this.launchers = { server: launcherSettings(build, 'server/bin/lifeboat-server'), agent: launcherSettings(build, 'agent/bin/lifeboat-agent') };
    this.dataDir = join(this.dir, 'server');
    this.encryption = encryption;
    this.cpuProf = cpuProf;
    this.plans = new Map();
    this.peaks = { server: 0, agent: 0 };
    this.windows = [];
    this.currentPhase = null;
  }

  async setup() {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    const serverLog = createWriteStream(join(this.dir, 'server.log'));
    this.server = spawn(process.execPath, [...this.launchers.server.flags, ...EXTRA_SERVER_FLAGS, this.bin.server, 'start', '--data', this.dataDir, '--port', '0', '--host', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...this.launchers.server.env, ...process.env, LIFEBOAT_LOG_LEVEL: 'info' } });
    this.url = await new Promise((resolvePromise, reject) => {
      let seen = '';
      const onData = (d) => {
        serverLog.write(d);
        seen += d;
        const m = /listening url=(http:\/\/127\.0\.0\.1:\d+)/.exec(seen);
        if (m) resolvePromise(m[1]);
      };
      this.server.stdout.on('data', onData);
      this.server.stderr.on('data', onData);
      this.server.on('exit', (code) => reject(new Error(`lifeboat-server exited ${code}: ${seen.slice(-2000)}`)));
      setTimeout(() => reject(new Error(`lifeboat-server did not start: ${seen.slice(-2000)}`)), 30_000).unref();
    });
    this.token = readFileSync(join(this.dataDir, 'admin-token'), 'utf8').trim();
    this.cliEnv = { LIFEBOAT_SERVER: this.url, LIFEBOAT_TOKEN: this.token };

    const passphraseFile = join(this.dir, 'passphrase');
    if (this.encryption) {
      writeFileSync(passphraseFile, `${PASSWORD}\n`, { mode: 0o600 });
      await timed(process.execPath, [this.bin.admin, 'encryption', 'init', '--passphrase-file', passphraseFile], { env: this.cliEnv });
    } else {
      // A repository takes no backup until its encryption is chosen (builds before that rule have no such route).
      await this.api('POST', '/v1/encryption/off').catch(() => undefined);
    }
    const { token } = await this.api('POST', '/v1/tokens', { expires: '1h' });
    this.configPath = join(this.dir, 'agent.json');
    await timed(process.execPath, [this.bin.agent, 'enroll', '--server', this.url, '--token', token, '--name', 'bench', '--config', this.configPath, '--state-dir', `${this.configPath}.state`]);
    if (this.encryption) {
      const config = JSON.parse(readFileSync(this.configPath, 'utf8'));
      writeFileSync(this.configPath, JSON.stringify({ ...config, passphraseFile }), { mode: 0o600 });
      chmodSync(this.configPath, 0o600);
    }
    const agentLog = createWriteStream(join(this.dir, 'agent.log'));
    const profile = this.cpuProf ? ['--cpu-prof', '--cpu-prof-dir', join(this.dir, 'profile')] : [];
    this.agent = spawn(process.execPath, [...profile, ...this.launchers.agent.flags, ...EXTRA_AGENT_FLAGS, this.bin.agent, 'run', '--config', this.configPath], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...this.launchers.agent.env, ...process.env, LIFEBOAT_LOG_LEVEL: 'info' } });
    this.agent.stdout.pipe(agentLog);
    this.agent.stderr.pipe(agentLog);
    for (let i = 0; ; i++) {
      const { agents } = await this.api('GET', '/v1/agents');
      if (agents.some((a) => a.name === 'bench' && a.online)) break;
      if (i > 300) throw new Error('the agent did not come online within 30 s; see out/lifeboat/agent.log');
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 500));
    this.initialThreads = { server: new Set(threadCpu(this.server.pid).keys()), agent: new Set(threadCpu(this.agent.pid).keys()) };
  }

  async api(method, path, body) {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  async plan(id, step) {
    this.plans.set(id, { id, agent: 'bench', steps: [step] });
    await this.api('POST', '/v1/plans', { plans: [...this.plans.values()] });
  }

  planFor(set) {
    return set === 'corpus' ? 'corpus' : 'db-files';
  }

  /** Runs a CLI command as one phase and measures the server and the agent around it. */
  async phase(args) {
    const pids = { server: this.server.pid, agent: this.agent.pid };
    for (const pid of Object.values(pids)) resetPeakRss(pid);
    const before = { server: processCpu(pids.server), agent: processCpu(pids.agent) };
    const threadsBefore = { server: threadCpu(pids.server), agent: threadCpu(pids.agent) };
    const startUs = Number(process.hrtime.bigint() / 1000n);
    const r = await timed(process.execPath, [this.bin.admin, ...args], { env: this.cliEnv });
    // The phase's time window, to split the agent's CPU profile by phase.
    this.windows.push({ label: this.currentPhase ?? args[0], startUs, endUs: Number(process.hrtime.bigint() / 1000n) });
    const cpu = { server: processCpu(pids.server) - before.server, agent: processCpu(pids.agent) - before.agent, cli: r.cpu };
    // Which threads did the work: the main thread, the encoder worker, libuv's pool (file system calls), GC helpers.
    const threads = {
      server: this.groupThreads(threadCpuDelta(pids.server, threadsBefore.server, threadCpu(pids.server)), this.initialThreads.server),
      agent: this.groupThreads(threadCpuDelta(pids.agent, threadsBefore.agent, threadCpu(pids.agent)), this.initialThreads.agent),
    };
    const rss = { server: processPeakRss(pids.server), agent: processPeakRss(pids.agent), cli: r.rss };
    this.peaks.server = Math.max(this.peaks.server, rss.server);
    this.peaks.agent = Math.max(this.peaks.agent, rss.agent);
    return { wall: r.wall, cpu: cpu.server + cpu.agent + cpu.cli, cpuBy: cpu, threads, rss, stdout: r.stdout };
  }

  /**
   * Node 20 names every thread "node", so threads are told apart by when they appeared: the main thread; threads
   * started after the process was up and idle (the agent's encoder worker threads); and the threads it started
   * with (V8's GC helpers and libuv's pool, which does the file-system calls: mostly system time).
   */
  groupThreads(rows, initial) {
    const groups = new Map();
    for (const r of rows) {
      const tid = Number(r.thread.replace('tid ', ''));
      const name = r.thread === 'main' ? 'main' : initial.has(tid) ? 'pool+GC threads' : 'worker threads';
      const g = groups.get(name) ?? { thread: name, user: 0, sys: 0, count: 0 };
      g.user = Number((g.user + r.user).toFixed(2));
      g.sys = Number((g.sys + r.sys).toFixed(2));
      g.count++;
      groups.set(name, g);
    }
    return [...groups.values()];
  }

  async backupPlan(plan) {
    const r = await this.phase(['backup', 'now', plan, '--wait']);
    const { jobs } = await this.api('GET', `/v1/jobs?plan=${encodeURIComponent(plan)}&limit=1`);
    return { ...r, note: jobs[0]?.summary ?? '', jobSeconds: jobSeconds(jobs[0]) };
  }

  async backup(set, src) {
    const plan = this.planFor(set);
    if (!this.plans.has(plan)) await this.plan(plan, { files: { paths: [src] } });
    return this.backupPlan(plan);
  }

  async restore(set, src, target) {
    const { snapshots } = await this.api('GET', `/v1/snapshots?plan=${this.planFor(set)}`);
    const r = await this.phase(['restore', snapshots[0].id, '--agent', 'bench', '--to', target]);
    const { jobs } = await this.api('GET', '/v1/jobs?limit=10');
    const job = jobs.find((j) => j.kind === 'restore');
    return { ...r, restoredRoot: join(target, src.slice(1)), note: job?.summary ?? '', jobSeconds: jobSeconds(job) };
  }

  storedBytes() {
    return treeBytes(this.dataDir);
  }

  breakdown() {
    return { store: treeBytes(join(this.dataDir, 'store')), total: treeBytes(this.dataDir) };
  }

  repoDir() {
    return join(this.dataDir, 'store');
  }

  async stop() {
    const end = (child) =>
      new Promise((resolvePromise) => {
        if (!child || child.exitCode !== null || child.signalCode !== null) return resolvePromise();
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolvePromise();
        });
        child.kill('SIGTERM');
      });
    await end(this.agent);
    await end(this.server);
  }
}

/** A job's own duration on the server's clock, from its request to its end (no CLI start-up, no polling). */
function jobSeconds(job) {
  return job?.finishedAt ? (Date.parse(job.finishedAt) - Date.parse(job.createdAt)) / 1000 : null;
}

export async function versions() {
  const first = async (p, a) => (await output(p, a).catch((e) => `unavailable (${e.message.split('\n')[0]})`)).split('\n')[0].trim();
  const git = await output('git', ['-C', ROOT, 'rev-parse', 'HEAD']).catch(() => 'unknown');
  const dirty = await output('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no']).catch(() => '');
  return {
    node: process.version,
    restic: await first('restic', ['version']),
    borg: await first('borg', ['--version']),
    zstd: (await first('zstd', ['--version'])).replace(/^\*+\s*|\s*\*+$/g, ''),
    tar: await first('tar', ['--version']),
    lifeboat: `${git.trim().slice(0, 12)}${dirty.trim() ? ` + uncommitted changes in ${dirty.trim().split('\n').length} tracked file(s) (the dist is built from the working tree)` : ''}`,
  };
}

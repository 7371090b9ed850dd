#!/usr/bin/env node
// The newcomer's first minute: a server and a local agent on the embedded default (SQLite catalog, local
// store) under .lifeboat-demo/, a demo plan, one backup and one restore — then both keep running.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(new URL('..', import.meta.url).pathname);
const home = join(root, '.lifeboat-demo');
const port = Number(process.env.LIFEBOAT_PORT ?? 7400);
const url = `http://127.0.0.1:${port}`;
const bin = {
  server: join(root, 'server/bin/lifeboat-server'),
  admin: join(root, 'server/bin/lifeboat.js'),
  agent: join(root, 'agent/bin/lifeboat-agent'),
};
const say = (line) => process.stdout.write(`\x1b[1m» ${line}\x1b[0m\n`);
mkdirSync(home, { recursive: true });

const children = [];
const start = (script, args, name) => {
  const child = spawn(script, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  child.on('exit', (code) => {
    if (!stopping) {
      console.error(`${name} exited (${code})`);
      stop(1);
    }
  });
  children.push(child);
  return child;
};
let stopping = false;
const stop = (code = 0) => {
  stopping = true;
  for (const c of children) c.kill('SIGTERM');
  setTimeout(() => process.exit(code), 500);
};
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));

async function waitForHealth() {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${url}/v1/health`)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the server did not come up on ${url}`);
}

const admin = (...args) => {
  const env = { ...process.env, LIFEBOAT_SERVER: url, LIFEBOAT_TOKEN: readFileSync(join(home, 'server/admin-token'), 'utf8').trim() };
  const result = spawnSync(bin.admin, args, { env, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`lifeboat ${args.join(' ')} failed (${result.status})`);
  return result.stdout;
};

say(`starting the server on ${url} (data in .lifeboat-demo/server)`);
start(bin.server, ['start', '--data', join(home, 'server'), '--port', String(port)], 'server');
await waitForHealth();
if (/not chosen yet/.test(admin('encryption', 'status'))) {
  // The one place backups are unencrypted by default: a real repository is given a passphrase (`lifeboat encryption init`).
  say('a demo: backups stored unencrypted (lifeboat encryption off)');
  admin('encryption', 'off');
}

const agentConfig = join(home, 'agent.json');
if (!existsSync(agentConfig)) {
  say('enrolling a local agent named "local"');
  const token = /^\s*(lbe_\S+)/m.exec(admin('token', 'create', '--expires', '10m'))?.[1];
  const r = spawnSync(bin.agent, ['enroll', '--server', url, '--token', token, '--name', 'local', '--config', agentConfig], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('enrollment failed');
}
say('starting the agent');
start(bin.agent, ['run', '--config', agentConfig], 'agent');

const sample = join(home, 'sample-app');
if (!existsSync(sample)) {
  mkdirSync(join(sample, 'uploads/2024'), { recursive: true });
  mkdirSync(join(sample, 'config'), { recursive: true });
  writeFileSync(join(sample, 'config/app.env'), 'APP_NAME=demo\nDATABASE_URL=postgres://app@localhost/app\n', { mode: 0o600 });
  for (let i = 0; i < 20; i++) writeFileSync(join(sample, 'uploads/2024', `photo-${i}.txt`), `upload ${i}\n`.repeat(500));
}
const planFile = join(home, 'demo-plan.yaml');
writeFileSync(planFile, `plans:\n  - id: demo\n    agent: local\n    schedule: "0 3 * * *"\n    rpo: 26h\n    steps:\n      - files: { paths: ["${sample}"] }\n    retention: { keepLast: 3, keepDaily: 7 }\n`);
for (let i = 0; i < 100; i++) {
  if (/"online": *true/.test(admin('agents', 'list', '--json'))) break;
  await new Promise((r) => setTimeout(r, 100));
}
say('applying the demo plan (.lifeboat-demo/demo-plan.yaml)');
process.stdout.write(admin('plan', 'apply', planFile));
say('backing it up now: lifeboat backup now demo --wait');
process.stdout.write(admin('backup', 'now', 'demo', '--wait'));
const snapshots = JSON.parse(admin('snapshots', 'list', '--plan', 'demo', '--json'));
const target = join(home, `restore-${Date.now()}`);
say(`restoring snapshot ${snapshots[0].id} into ${target}`);
process.stdout.write(admin('restore', snapshots[0].id, '--agent', 'local', '--to', target));
say('done. The server and the agent keep running; in another shell try:');
process.stdout.write(`  export LIFEBOAT_SERVER=${url} LIFEBOAT_TOKEN=$(cat .lifeboat-demo/server/admin-token)\n  pnpm exec lifeboat snapshots list\n  pnpm exec lifeboat jobs list\n  pnpm exec lifeboat --help\nCtrl-C stops both.\n`);

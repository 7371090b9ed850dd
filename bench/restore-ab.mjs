#!/usr/bin/env node
// A/B of Lifeboat restores: two builds (dist snapshots made by bench/tools.mjs snapshotBuild) each back up the same
// corpus once, then restore it in turns, so both see the same disk conditions. For judging one restore change;
// the full comparison with other tools is bench/run.mjs.
//
//   node bench/restore-ab.mjs --corpus DIR --a BUILD_A --b BUILD_B [--rounds 3] [--out DIR]
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { settleFileCreation } from './measure.mjs';
import { Lifeboat } from './tools.mjs';

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean).map((a) => a.trim().split(/\s+/)));
const corpus = resolve(args.corpus);
const out = resolve(args.out ?? '/tmp/restore-ab');
const rounds = Number(args.rounds ?? 3);
const say = (msg) => process.stderr.write(`${msg}\n`);

const tools = { a: new Lifeboat(join(out, 'a'), { build: resolve(args.a) }), b: new Lifeboat(join(out, 'b'), { build: resolve(args.b) }) };
const results = { a: [], b: [] };
try {
  for (const [name, tool] of Object.entries(tools)) {
    await tool.setup();
    const r = await tool.backup('corpus', corpus);
    say(`${name}: backup ${r.wall.toFixed(2)} s, CPU ${r.cpu.toFixed(1)} s, peak RSS agent ${(r.rss.agent / 1048576).toFixed(0)} MiB, server ${(r.rss.server / 1048576).toFixed(0)} MiB`);
  }
  for (let round = 0; round < rounds; round++) {
    for (const name of round % 2 === 0 ? ['a', 'b'] : ['b', 'a']) {
      const target = join(out, `restore-${name}`);
      rmSync(target, { recursive: true, force: true });
      await settleFileCreation(out);
      const r = await tools[name].restore('corpus', corpus, target);
      results[name].push(r);
      say(`${name}: restore ${r.wall.toFixed(2)} s, CPU ${r.cpu.toFixed(1)} s (agent ${r.cpuBy.agent.toFixed(1)}, server ${r.cpuBy.server.toFixed(1)}), agent peak ${(r.rss.agent / 1048576).toFixed(0)} MiB; threads ${JSON.stringify(r.threads.agent)}`);
    }
  }
} finally {
  for (const tool of Object.values(tools)) await tool.stop().catch(() => undefined);
}
const median = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const name of ['a', 'b']) say(`${name}: median restore ${median(results[name].map((r) => r.wall)).toFixed(2)} s, median CPU ${median(results[name].map((r) => r.cpu)).toFixed(1)} s`);

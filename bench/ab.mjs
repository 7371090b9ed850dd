#!/usr/bin/env node
// A/B of two Lifeboat builds (dist snapshots made with snapshotBuild in bench/tools.mjs), in turns, so both meet
// the same machine: on our VMs one run per build says nothing (file creation alone swings tenfold). For judging
// one change; the comparison with other tools is bench/run.mjs.
//
//   node bench/ab.mjs --phase restore --corpus DIR --a BUILD_A --b BUILD_B [--rounds 3] [--out DIR] [--mutate]
//   node bench/ab.mjs --phase backup  --corpus DIR --a BUILD_A --b BUILD_B [--rounds 3] [--out DIR]
//   node bench/ab.mjs --phase unchanged --corpus DIR --a BUILD_A --b BUILD_B [--rounds 3] [--out DIR] [--mutate]
//   node bench/ab.mjs --snapshot DIR   (copies the current build, after `pnpm build`, to DIR: one side of an A/B)
//
// restore: each build backs the corpus up once (with --mutate, as below: twice), then restores it `rounds` times,
// the builds taking turns.
// backup: each round, each build backs the corpus up into a fresh server and agent (a first backup every time).
// unchanged: each build backs the corpus up once (with --mutate: then the corpus is mutated as bench/run.mjs does
// and each backs it up again), then again `rounds` times (nothing changed), the builds taking turns.
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { mutateCorpus } from './corpus.mjs';
import { deleteTree, output, quietAfterDeletions, readThrough, settleFileCreation } from './measure.mjs';
import { Lifeboat, snapshotBuild } from './tools.mjs';

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean).map((a) => a.trim().split(/\s+/)));
if (args.snapshot) {
  const { root, digest } = snapshotBuild(resolve(args.snapshot));
  process.stderr.write(`build ${digest} copied to ${root}\n`);
  process.exit(0);
}
if (args.help || args.h) {
  process.stdout.write('usage: node bench/ab.mjs --phase restore|backup|unchanged --corpus DIR --a BUILD_A --b BUILD_B [--rounds 3] [--out DIR]\n       node bench/ab.mjs --snapshot DIR\n');
  process.exit(0);
}
if (!args.corpus || !args.a || !args.b || !['backup', 'restore', 'unchanged'].includes(args.phase ?? 'restore')) {
  process.stderr.write('usage: node bench/ab.mjs --phase restore|backup|unchanged --corpus DIR --a BUILD_A --b BUILD_B [--rounds 3] [--out DIR]\n');
  process.exit(2);
}
const phase = args.phase ?? 'restore';
const corpus = resolve(args.corpus);
const out = resolve(args.out ?? '/tmp/lifeboat-ab');
const rounds = Number(args.rounds ?? 3);
const builds = { a: resolve(args.a), b: resolve(args.b) };
const say = (msg) => process.stderr.write(`${msg}\n`);
const MiB = (bytes) => (bytes / 1048576).toFixed(0);
const mainThread = (threads) => threads.find((t) => t.thread === 'main');
const describe = (r) =>
  `${r.wall.toFixed(2)} s, CPU ${r.cpu.toFixed(1)} s (agent ${r.cpuBy.agent.toFixed(1)}, server ${r.cpuBy.server.toFixed(1)}; ` +
  `agent main ${mainThread(r.threads.agent)?.user ?? '?'} user + ${mainThread(r.threads.agent)?.sys ?? '?'} sys), peak RSS agent ${MiB(r.rss.agent)} MiB, server ${MiB(r.rss.server)} MiB` +
  `\n   threads: ${Object.entries(r.threads).map(([proc, list]) => `${proc} ${list.map((t) => `${t.thread} ${t.user}+${t.sys}`).join(', ')}`).join('; ')}`;
const order = (round) => (round % 2 === 0 ? ['a', 'b'] : ['b', 'a']);

const results = { a: [], b: [] };
if (phase === 'backup') {
  for (let round = 0; round < rounds; round++) {
    for (const name of order(round)) {
      const dir = join(out, `${name}-${round}`);
      const tool = new Lifeboat(dir, { build: builds[name] });
      try {
        await tool.setup();
        // As bench/run.mjs does: the source in the page cache and no dirty pages left, for every backup alike.
        readThrough(corpus);
        await output('sync', []);
        const r = await tool.backup('corpus', corpus);
        results[name].push(r);
        say(`${name}: backup ${describe(r)}`);
      } finally {
        await tool.stop().catch(() => undefined);
        // AB_KEEP=1 keeps the round's server and agent logs (for BENCH_AGENT_FLAGS such as --trace-deopt).
        if (!process.env.AB_KEEP) rmSync(dir, { recursive: true, force: true });
      }
    }
  }
} else {
  const tools = { a: new Lifeboat(join(out, 'a'), { build: builds.a }), b: new Lifeboat(join(out, 'b'), { build: builds.b }) };
  const restoreTargets = () => Array.from({ length: rounds }, (_, round) => ['a', 'b'].map((name) => join(out, `restore-${name}-${round}`))).flat();
  // Left by an interrupted run: deleted before the backups, well ahead of the first restore (see below).
  for (const target of restoreTargets()) deleteTree(target);
  try {
    for (const [name, tool] of Object.entries(tools)) {
      await tool.setup();
      readThrough(corpus);
      await output('sync', []);
      say(`${name}: backup ${describe(await tool.backup('corpus', corpus))}`);
    }
    if (phase !== 'backup' && 'mutate' in args) {
      // The unchanged backups then follow an incremental one, as in bench/run.mjs (files kept from changed groups).
      const mutation = mutateCorpus(corpus, { percent: 2, seed: 1 });
      say(`mutated ${mutation.changedPercent}% of the corpus (bench/run.mjs generates it again when it finds it so)`);
      for (const [name, tool] of Object.entries(tools)) {
        readThrough(corpus);
        await output('sync', []);
        say(`${name}: incremental backup ${describe(await tool.backup('corpus', corpus))}`);
      }
    }
    if (phase === 'restore') await quietAfterDeletions(say);
    for (let round = 0; round < rounds; round++) {
      for (const name of order(round)) {
        if (phase === 'unchanged') {
          readThrough(corpus);
          await output('sync', []);
          const r = await tools[name].backup('corpus', corpus);
          results[name].push(r);
          say(`${name}: unchanged backup ${describe(r)}`);
          continue;
        }
        // Each restore into a fresh directory, the earlier ones kept until the end: this disk's ext4 has no
        // journal, and then its inode allocator skips every inode deleted in the last minute or more
        // (fs/ext4/ialloc.c recently_deleted), rescanning them on each file created. Deleting a 70 000-file tree
        // before a restore made that restore 2-3 times slower, in about every other round.
        const target = join(out, `restore-${name}-${round}`);
        // The last restore's gigabyte written out first, as bench/run.mjs does, so this one does not share the disk with it.
        await output('sync', []);
        await settleFileCreation(out);
        const r = await tools[name].restore('corpus', corpus, target);
        results[name].push(r);
        say(`${name}: restore ${describe(r)}`);
      }
    }
  } finally {
    for (const tool of Object.values(tools)) await tool.stop().catch(() => undefined);
    for (const target of restoreTargets()) deleteTree(target);
    // Each command's time window (CLOCK_MONOTONIC µs), to split CPU profiles (BENCH_AGENT_FLAGS) with profile-summary.mjs.
    writeFileSync(join(out, 'windows.json'), JSON.stringify(Object.fromEntries(Object.entries(tools).map(([name, tool]) => [name, tool.windows])), null, 1));
  }
}
const median = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const name of ['a', 'b']) say(`${name}: median ${phase} ${median(results[name].map((r) => r.wall)).toFixed(2)} s, median CPU ${median(results[name].map((r) => r.cpu)).toFixed(1)} s`);

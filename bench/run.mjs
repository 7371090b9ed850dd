#!/usr/bin/env node
// Lifeboat beside restic, borg and `tar | zstd -3 -T2`, in one run on the same data.
//
//   pnpm build && node bench/run.mjs [--corpus DIR] [--size 1G] [--seed 1] [--percent 2] [--skip-generate]
//       [--tools lifeboat,restic,borg,tarzstd] [--out bench/out] [--no-db] [--scale 50] [--transactions 50000]
//       [--borg-compression zstd,3] [--no-encryption] [--cpu-prof]
//
// Phases, each tool in turn on the same bytes: first backup → mutate (about 2%) → incremental backup →
// unchanged re-backup → restore of the latest snapshot into a fresh directory (checked file by file against
// the corpus) → the PostgreSQL dump series (day-1 dump, then the day-2 dump in its place). Before every timed
// backup the source is read through once and `sync` is run, so every tool starts with the source in the page
// cache and no dirty pages of the tool before it; before every restore the repository is read through likewise
// (page caches cannot be dropped here: no privilege). Results: a markdown table on stdout and in
// OUT/results.md, everything in OUT/results.json.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, freemem, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { generateCorpus, mutateCorpus, parseSize, readState } from './corpus.mjs';
import { compareTrees, deleteTree, digestTree, MiB, output, quietAfterDeletions, readThrough, settleFileCreation } from './measure.mjs';
import { runPgSeries } from './pg-series.mjs';
import { profileMarkdown, summarizeProfile } from './profile-summary.mjs';
import { Borg, Lifeboat, Restic, snapshotBuild, TarZstd, versions } from './tools.mjs';

const ROOT = resolve(new URL('..', import.meta.url).pathname);

function parseArgs(argv) {
  if (argv.includes('--help') || argv.includes('-h')) {
    // The usage is this file's opening comment.
    const head = readFileSync(new URL(import.meta.url), 'utf8').split('\n').slice(1);
    process.stdout.write(`${head.slice(0, head.findIndex((l) => !l.startsWith('//'))).map((l) => l.replace(/^\/\/ ?/, '')).join('\n')}\n`);
    process.exit(0);
  }
  const opts = { tools: 'lifeboat,restic,borg,tarzstd', size: '1G', seed: '1', percent: '2', scale: '50', transactions: '50000', 'borg-compression': 'zstd,3' };
  const flags = new Set(['skip-generate', 'no-db', 'no-encryption', 'cpu-prof', 'report-only']);
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, '');
    if (!argv[i].startsWith('--')) throw new Error(`unexpected argument ${argv[i]}`);
    if (flags.has(name)) opts[name] = true;
    else opts[name] = argv[++i];
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const out = resolve(opts.out ?? join(ROOT, 'bench/out'));
const corpus = resolve(opts.corpus ?? join(out, 'corpus'));
const seed = Number(opts.seed);
const started = Date.now();
const say = (msg) => process.stderr.write(`[bench +${((Date.now() - started) / 1000).toFixed(0)}s] ${msg}\n`);
const sync = () => output('sync', []);

let build;
let toolNames;
let tools;
let results;

async function machine() {
  const df = (await output('df', ['-PT', out]).catch(() => '')).trim().split('\n').pop()?.split(/\s+/) ?? [];
  const probe = join(out, 'dd-probe');
  // Sequential write speed of the disk the repositories are on (256 MiB, flushed to the device).
  const dd = spawnSync('dd', ['if=/dev/zero', `of=${probe}`, 'bs=4M', 'count=64', 'conv=fdatasync'], { encoding: 'utf8' });
  const ddLine = dd.status === 0 ? dd.stderr.trim().split('\n').pop() : 'dd failed';
  rmSync(probe, { force: true });
  return {
    cpu: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`,
    nproc: (await output('nproc', [])).trim(),
    ramGiB: Number((totalmem() / 2 ** 30).toFixed(1)),
    freeGiB: Number((freemem() / 2 ** 30).toFixed(1)),
    disk: df.length > 5 ? `${df[0]} (${df[1]}), ${(Number(df[4]) / 2 ** 20).toFixed(0)} GiB free` : 'unknown',
    diskWrite: ddLine,
    kernel: (await output('uname', ['-r'])).trim(),
  };
}

/** The load average and the busiest processes right now: the machine may be shared, and this says so. */
async function loadNow() {
  const loadavg = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const ps = await output('ps', ['-eo', 'pid=,pcpu=,etime=,args=', '--sort=-pcpu']).catch(() => '');
  const busy = ps
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(([pid, pcpu]) => pid && Number(pid) !== process.pid && Number(pcpu) >= 10)
    .slice(0, 3)
    .map(([, pcpu, etime, ...args]) => `${pcpu}% CPU for ${etime}: ${args.join(' ').slice(0, 100)}`);
  return { loadavg, busy };
}

/** A timed backup of `src` by every tool, each after a read-through of the source and a sync. */
async function backupPhase(phase, set, src, { stored = true } = {}) {
  for (const tool of tools) {
    readThrough(src);
    await sync();
    say(`${phase}: ${tool.name}`);
    const before = tool.storedBytes(set);
    tool.currentPhase = phase;
    const r = await tool.backup(set, src);
    await sync();
    const after = tool.storedBytes(set);
    results[tool.name][phase] = { wall: r.wall, jobSeconds: r.jobSeconds, cpu: r.cpu, cpuBy: r.cpuBy, threads: r.threads, rss: r.rss, note: r.note, storedBefore: before, stored: after, added: after - before };
    say(`${phase}: ${tool.name} ${r.wall.toFixed(1)} s, +${((after - before) / MiB).toFixed(1)} MiB${r.note ? ` (${r.note})` : ''}`);
  }
}

async function main() {
  mkdirSync(out, { recursive: true });
  for (const f of ['agent/dist/cli/main.js', 'server/dist/cli/server-main.js', 'server/dist/cli/admin-main.js', 'agent/dist/scratch/postgres.js']) {
    if (!existsSync(join(ROOT, f))) throw new Error(`${f} is missing: run \`pnpm build\` first`);
  }

  build = snapshotBuild(join(out, 'build'));
  const makeTool = {
    lifeboat: () => new Lifeboat(out, { encryption: !opts['no-encryption'], cpuProf: !!opts['cpu-prof'], build: build.root }),
    restic: () => new Restic(out),
    borg: () => new Borg(out, opts['borg-compression']),
    tarzstd: () => new TarZstd(out),
  };
  toolNames = opts.tools.split(',').map((t) => t.trim());
  for (const t of toolNames) if (!makeTool[t]) throw new Error(`unknown tool ${t}; one of ${Object.keys(makeTool).join(', ')}`);
  tools = toolNames.map((t) => makeTool[t]());
  results = Object.fromEntries(tools.map((t) => [t.name, {}]));

  const info = { machine: await machine(), versions: await versions(), options: { ...opts, out, corpus }, startedAt: new Date().toISOString() };
  info.versions.lifeboat += `, build ${build.digest} (sha256 of the dist .js files, copied to ${build.root} for the run)`;
  info.load = { atStart: await loadNow() };
  say(`machine: ${JSON.stringify(info.machine)}`);
  say(`versions: ${JSON.stringify(info.versions)}`);

  // The corpus.
  const size = parseSize(opts.size);
  const state = readState(corpus);
  if (opts['skip-generate'] && state && state.mutations === 0 && state.seed === seed && state.size === size) {
    say(`reusing the corpus in ${corpus}`);
  } else {
    if (opts['skip-generate']) say(`the corpus in ${corpus} is ${state ? 'mutated or of another size/seed' : 'missing'}: generating it`);
    deleteTree(corpus);
    const g = generateCorpus(corpus, { size, seed });
    say(`generated ${g.files} files, ${(g.bytes / MiB).toFixed(0)} MiB in ${g.seconds.toFixed(1)} s`);
    info.generate = g;
  }
  let digest = digestTree(corpus);
  info.corpus = { files: digest.files.size, bytes: digest.bytes };

  let lifeboatPg = null;
  try {
    for (const tool of tools) {
      say(`setting up ${tool.name}`);
      await tool.setup();
    }

    // Left by an interrupted run: deleted now, long before the restores, and noted for quietAfterDeletions.
    deleteTree(join(out, 'restore'));
    const settled = await settleFileCreation(join(out, 'restore', 'probe'));
    say(`the disk creates a file in ${settled.toFixed(0)} µs`);
    await backupPhase('first', 'corpus', corpus);
    const mutation = mutateCorpus(corpus, { percent: Number(opts.percent), seed });
    info.mutation = mutation;
    say(`mutated: ${mutation.changedPercent}% (${(mutation.changedBytes / MiB).toFixed(1)} MiB in ${mutation.changedFiles} files, ${mutation.addedFiles} added, ${mutation.deletedFiles} deleted)`);
    digest = digestTree(corpus);
    info.corpusAfterMutation = { files: digest.files.size, bytes: digest.bytes };
    await backupPhase('incremental', 'corpus', corpus);
    await backupPhase('unchanged', 'corpus', corpus);

    info.waitedBeforeRestores = await quietAfterDeletions(say);
    for (const tool of tools) {
      const target = join(out, 'restore', tool.name.replace(/\W/g, ''));
      mkdirSync(target, { recursive: true });
      readThrough(tool.repoDir('corpus'));
      await sync();
      // The probe recorded is the one that settled: a short probe passed while a 2000-file one, just after,
      // still found the disk slow (66 µs before one of our restores, 24 before the next tool's).
      const createProbeUs = await settleFileCreation(join(out, 'restore', 'probe', tool.name.replace(/\W/g, '')), { files: 2000 });
      await sync();
      say(`restore: ${tool.name} (creating a file takes ${createProbeUs.toFixed(0)} µs on this disk now)`);
      tool.currentPhase = 'restore';
      const r = await tool.restore('corpus', corpus, target);
      await sync();
      const check = compareTrees(digest, r.restoredRoot);
      results[tool.name].restore = { wall: r.wall, jobSeconds: r.jobSeconds, note: r.note, cpu: r.cpu, cpuBy: r.cpuBy, threads: r.threads, rss: r.rss, verified: check.ok, check: check.summary, bytes: digest.bytes, createProbeUs };
      say(`restore: ${tool.name} ${r.wall.toFixed(1)} s: ${check.summary}`);
    }
    // Deleted only now: deleting tens of thousands of files slows file creation on this disk for a while, and
    // would slow the next tool's restore.
    deleteTree(join(out, 'restore'));
    for (const tool of tools) if (tool.breakdown) results[tool.name].corpusBreakdown = tool.breakdown();

    if (!opts['no-db']) {
      const pgOut = join(out, 'pg');
      const dbSrc = join(out, 'db-src');
      rmSync(dbSrc, { recursive: true, force: true });
      mkdirSync(dbSrc, { recursive: true });
      const baseline = Object.fromEntries(tools.map((t) => [t.name, t.storedBytes('db')]));
      // Lifeboat's own path for a database, on a server of its own (its chunks must not meet the dump files').
      if (toolNames.includes('lifeboat')) {
        lifeboatPg = new Lifeboat(join(out, 'lifeboat-pg-path'), { encryption: !opts['no-encryption'], build: build.root });
        await lifeboatPg.setup();
      }
      const pgPath = {};
      say(`pg-series: scale ${opts.scale}, ${opts.transactions} transactions`);
      info.pg = await runPgSeries({
        out: pgOut,
        scale: Number(opts.scale),
        transactions: Number(opts.transactions),
        seed,
        log: say,
        buildRoot: build.root,
        onDump: async (day, db) => {
          if (!lifeboatPg) return;
          if (day === 1) await lifeboatPg.plan('db-pg', { postgres: { database: db.database, host: db.host, port: db.port, user: db.user } });
          const before = lifeboatPg.storedBytes();
          const r = await lifeboatPg.backupPlan('db-pg');
          pgPath[`day${day}`] = { wall: r.wall, cpu: r.cpu, rss: r.rss, added: lifeboatPg.storedBytes() - before, note: r.note };
          say(`lifeboat postgres source, day ${day}: ${r.wall.toFixed(1)} s, +${(pgPath[`day${day}`].added / MiB).toFixed(1)} MiB`);
        },
      });
      info.lifeboatPostgresPath = pgPath;
      for (const day of [1, 2]) {
        copyFileSync(join(pgOut, `day${day}.pgdump`), join(dbSrc, 'bench.pgdump'));
        await backupPhase(`db${day}`, 'db', dbSrc);
      }
      for (const tool of tools) {
        const r = results[tool.name];
        r.db = { day1Stored: r.db1.stored - baseline[tool.name], day2Added: r.db2.added, day1Wall: r.db1.wall, day2Wall: r.db2.wall };
      }
    }
  } finally {
    for (const tool of tools) await tool.stop().catch((e) => say(`stopping ${tool.name}: ${e.message}`));
    await lifeboatPg?.stop().catch(() => {});
  }

  const lifeboat = tools.find((t) => t.name === 'lifeboat');
  if (lifeboat) {
    results.lifeboat.peakRss = lifeboat.peaks;
    if (opts['cpu-prof']) {
      const dir = join(out, 'lifeboat', 'profile');
      const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')) : [];
      const windows = lifeboat.windows.filter((w) => ['first', 'incremental', 'unchanged', 'restore'].includes(w.label));
      info.profiles = files.sort().map((f) => summarizeProfile(join(dir, f), { top: 12, windows }));
    }
  }
  info.load.atEnd = await loadNow();
  info.finishedAt = new Date().toISOString();
  info.seconds = (Date.now() - started) / 1000;
  const markdown = report(info, results);
  writeFileSync(join(out, 'results.json'), `${JSON.stringify({ info, results }, null, 2)}\n`);
  writeFileSync(join(out, 'results.md'), markdown);
  process.stdout.write(markdown);
}

const mib = (b) => (Number.isFinite(b) ? (b / MiB).toFixed(b < 10 * MiB ? 2 : 0) : '–');
const sec = (s) => (Number.isFinite(s) ? s.toFixed(s < 10 ? 2 : 1) : '–');
const x = (r) => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–');
const rssList = (rss) => (rss ? Object.entries(rss).map(([p, b]) => `${p} ${(b / MiB).toFixed(0)}`).join(', ') : '–');

function report(info, results) {
  const names = Object.keys(results);
  const R = results.restic;
  const bytesIn = info.corpus.bytes;
  const bytesAfter = info.corpusAfterMutation?.bytes ?? bytesIn;
  const rows = [];
  const row = (label, fn) => rows.push(`| ${label} | ${names.map((n) => fn(results[n], n)).join(' | ')} |`);
  const vsRestic = (value, ratio) => (R ? `${value} (${x(ratio)})` : value);
  row('first backup: wall s', (r) => sec(r.first?.wall));
  row('first backup: MiB/s (× restic = restic time / time)', (r) => vsRestic((bytesIn / MiB / r.first?.wall).toFixed(0), R?.first?.wall / r.first?.wall));
  row('first backup: CPU s (user+sys)', (r) => `${sec(r.first?.cpu)}${r.first?.cpuBy ? ` (server ${sec(r.first.cpuBy.server)}, agent ${sec(r.first.cpuBy.agent)})` : ''}`);
  row('first backup: peak RSS MiB', (r) => rssList(r.first?.rss));
  row('stored after first backup MiB (× restic)', (r) => vsRestic(mib(r.first?.stored), r.first?.stored / R?.first?.stored));
  row('incremental (~2% changed): wall s', (r) => vsRestic(sec(r.incremental?.wall), R?.incremental?.wall / r.incremental?.wall));
  row('incremental: CPU s', (r) => sec(r.incremental?.cpu));
  row('incremental: bytes added MiB (× restic)', (r) => vsRestic(mib(r.incremental?.added), r.incremental?.added / R?.incremental?.added));
  row('unchanged re-backup: wall s (× restic = restic/tool)', (r) => vsRestic(sec(r.unchanged?.wall), R?.unchanged?.wall / r.unchanged?.wall));
  row('unchanged re-backup: CPU s', (r) => sec(r.unchanged?.cpu));
  row('unchanged re-backup: peak RSS MiB', (r) => rssList(r.unchanged?.rss));
  row('total stored, 3 backups, MiB (× restic)', (r) => vsRestic(mib(r.unchanged?.stored), r.unchanged?.stored / R?.unchanged?.stored));
  row('restore: wall s', (r) => sec(r.restore?.wall));
  row('restore: MiB/s (× restic)', (r) => vsRestic((bytesAfter / MiB / r.restore?.wall).toFixed(0), R?.restore?.wall / r.restore?.wall));
  row('restore: CPU s', (r) => sec(r.restore?.cpu));
  row('restore: peak RSS MiB', (r) => rssList(r.restore?.rss));
  row('restore: µs to create a file, probed just before', (r) => (r.restore?.createProbeUs !== undefined ? r.restore.createProbeUs.toFixed(0) : '–'));
  row('restore: verified', (r) => (r.restore ? (r.restore.verified ? `yes (${r.restore.check})` : `**NO**: ${r.restore.check}`) : '–'));
  if (info.pg) {
    row(`db: day-1 dump (${mib(info.pg.day1Bytes)} MiB) stored MiB`, (r) => vsRestic(mib(r.db?.day1Stored), r.db?.day1Stored / R?.db?.day1Stored));
    row(`db: bytes added by the day-2 dump MiB (× restic)`, (r) => vsRestic(mib(r.db?.day2Added), r.db?.day2Added / R?.db?.day2Added));
    row('db: day-2 backup wall s', (r) => sec(r.db?.day2Wall));
  }
  const header = `| | ${names.map((n) => n.replace(/\|/g, '\\|')).join(' | ')} |\n|---|${names.map(() => '---').join('|')}|`;

  const L = results.lifeboat;
  const targets = [];
  if (L && R) {
    const t = (what, value, goal, ok) => targets.push(`| ${what} | ${value} | ${goal} | ${ok ? 'met' : '**missed**'} |`);
    const thr = R.first.wall / L.first.wall;
    t('first backup throughput vs restic', x(thr), '≥ 1.30×', thr >= 1.3);
    t('unchanged re-backup wall time', `${sec(L.unchanged.wall)} s vs ${sec(R.unchanged.wall)} s`, '≤ restic', L.unchanged.wall <= R.unchanged.wall);
    t('bytes added by the day of change', `${mib(L.incremental.added)} vs ${mib(R.incremental.added)} MiB`, '≤ restic', L.incremental.added <= R.incremental.added);
    const st = L.unchanged.stored / R.unchanged.stored;
    t('total stored vs restic', x(st), '≤ 1.05×', st <= 1.05);
    const rt = R.restore.wall / L.restore.wall;
    t('restore throughput vs restic', x(rt), '≥ 1.00×', rt >= 1.0);
    const peak = Math.max(L.peakRss?.server ?? 0, L.peakRss?.agent ?? 0);
    t('peak RSS per process (all phases)', `server ${mib(L.peakRss?.server)}, agent ${mib(L.peakRss?.agent)} MiB`, '≤ 150 MiB', peak <= 150 * MiB);
    if (L.db && R.db) {
      targets.push(`| db: bytes added by the day-2 dump | ${mib(L.db.day2Added)} MiB (${x(L.db.day2Added / R.db.day2Added)} restic's ${mib(R.db.day2Added)}${results.borg?.db ? `; borg ${mib(results.borg.db.day2Added)}` : ''}) | reported beside restic and borg | – |`);
    }
  }

  const m = info.machine;
  const v = info.versions;
  const lines = [
    `## Results (${info.startedAt}, ${(info.seconds / 60).toFixed(1)} min)`,
    '',
    `Machine: ${m.cpu}, nproc ${m.nproc}, ${m.ramGiB} GiB RAM, disk ${m.disk}; sequential write (dd 256 MiB, fdatasync): ${m.diskWrite}; kernel ${m.kernel}.`,
    `Versions: node ${v.node}; ${v.restic}; ${v.borg}; ${v.zstd}; ${v.tar}; lifeboat ${v.lifeboat}.`,
    `Corpus: ${info.corpus.files} files, ${mib(info.corpus.bytes)} MiB (seed ${info.options.seed}); mutate changed ${info.mutation?.changedPercent}% (${mib(info.mutation?.changedBytes)} MiB: ${mib(info.mutation?.appended)} appended to logs, ${mib(info.mutation?.rewritten)} rewritten in place, ${mib(info.mutation?.inserted)} inserted mid-file, ${mib(info.mutation?.added)} in ${info.mutation?.addedFiles} new files; ${info.mutation?.deletedFiles} files deleted).`,
    `Settings: Lifeboat encryption ${info.options['no-encryption'] ? 'off' : 'on (AES-256-GCM, as restic and borg repokey)'}, zstd level 3; restic repository v2, compression auto; borg ${info.options['borg-compression']}, repokey; tar | zstd -3 -T2 (no dedup, no encryption: every backup is a full archive).`,
    'Caching: warm. Before each timed backup the source is read through once and `sync` is run; before each restore the repository is read through and `sync` is run, and the run waits (up to 2 minutes) until creating a file takes under 60 µs again: after large deletions this disk is slow to create files for half a minute or more (the probe taken just before each restore is in the table); page caches cannot be dropped here. Restores write to a fresh directory on the same disk and are checked file by file (SHA-256) against the corpus. ' +
      `This disk's ext4 has no journal, so files are slow to create for minutes after a large deletion (bench/measure.mjs deleteTree): the run waits before the restores until its own deletions are old enough (${(info.waitedBeforeRestores ?? 0).toFixed(0)} s in this run).`,
    `Load: at start ${info.load.atStart.loadavg}${info.load.atStart.busy.length ? ` (busy processes not part of the benchmark may be listed: ${info.load.atStart.busy.join('; ')})` : ''}; at end ${info.load.atEnd.loadavg}.`,
    'CPU = user+sys of all the tool\'s processes (restic, borg, tar and zstd under GNU time; Lifeboat: server + agent from /proc/<pid>/stat around the phase, plus the admin CLI). Peak RSS per process (GNU time max RSS; Lifeboat: VmHWM reset at each phase). "Stored" = bytes of the repository directory (Lifeboat: the server data directory, store + catalog).',
    '',
    header,
    ...rows,
    '',
  ];
  if (info.pg) {
    const p = info.lifeboatPostgresPath ?? {};
    lines.push(
      `Database series: pgbench scale ${info.pg.scale} with customer-record fillers, PostgreSQL ${info.pg.postgres}; day 1 dump ${mib(info.pg.day1Bytes)} MiB, ${info.pg.transactions} transactions, day 2 dump ${mib(info.pg.day2Bytes)} MiB (\`pg_dump -Fc -Z0\`). Every tool (Lifeboat through its files source) backs up the dump file: day 1, then the day-2 dump in its place.` +
        (p.day1 ? ` Lifeboat's own path (its postgres source running pg_dump itself, on a separate server): day 1 ${sec(p.day1.wall)} s, +${mib(p.day1.added)} MiB; day 2 ${sec(p.day2?.wall)} s, +${mib(p.day2?.added)} MiB.` : ''),
      '',
    );
  }
  if (targets.length) lines.push('Targets (issue 4), Lifeboat vs restic:', '', '| target | value | goal | |', '|---|---|---|---|', ...targets, '');
  if (L) {
    const notes = ['first', 'incremental', 'unchanged', 'restore'].map((p) => `${p}: ${sec(L[p]?.jobSeconds)} s (CLI wall ${sec(L[p]?.wall)} s) — ${L[p]?.note}`);
    lines.push('Lifeboat jobs, duration on the server clock from request to end (the table\'s wall time is the admin CLI\'s, which adds its start-up and up to 0.5 s of polling) and summary:', '', ...notes.map((n) => `- ${n}`), '');
    const threadLine = (list) => list.map((t) => `${t.thread}${t.count > 1 ? ` (${t.count})` : ''} ${(t.user + t.sys).toFixed(1)} (${t.user.toFixed(1)} user + ${t.sys.toFixed(1)} sys)`).join(', ');
    lines.push('Lifeboat CPU seconds by thread (from /proc/<pid>/task; "worker threads" started after the agent was up: the codec pool; a restore\'s file writer thread has ended by then, so its CPU counts only in the table\'s total; "pool+GC threads": libuv\'s file-system pool and V8\'s GC helpers):', '');
    for (const p of ['first', 'incremental', 'unchanged', 'restore']) {
      if (L[p]?.threads) lines.push(`- ${p}: agent: ${threadLine(L[p].threads.agent)}; server: ${threadLine(L[p].threads.server)}`);
    }
    lines.push('');
    if (L.corpusBreakdown) lines.push(`Lifeboat data directory after the corpus backups: store ${mib(L.corpusBreakdown.store)} MiB, catalog and the rest ${mib(L.corpusBreakdown.total - L.corpusBreakdown.store)} MiB.`, '');
  }
  if (info.profiles?.length) lines.push('Lifeboat agent CPU profile (node --cpu-prof; self time by phase and thread, idle left out):', '');
  for (const p of info.profiles ?? []) lines.push(profileMarkdown(p));
  return `${lines.join('\n')}\n`;
}

/** --report-only: re-renders OUT/results.md from OUT/results.json, without a run. */
async function renderOnly() {
  const { info, results: saved } = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  const markdown = report(info, saved);
  writeFileSync(join(out, 'results.md'), markdown);
  process.stdout.write(markdown);
}

(opts['report-only'] ? renderOnly() : main()).catch((err) => {
  say(`failed: ${err instanceof Error ? err.stack : err}`);
  process.exit(1);
});

#!/usr/bin/env node
// The PostgreSQL dump series: a scratch cluster, pgbench's schema at scale 50 filled with rows of realistic
// entropy, `pg_dump -Fc -Z0` as day 1, a day of transactions, `pg_dump -Fc -Z0` as day 2.
//
//   node bench/pg-series.mjs [--out bench/out/pg] [--scale 50] [--transactions 50000] [--seed 1]
//
// pgbench's own rows are blank padding (its dump compresses over 100×, which flatters every tool), so the tables
// are created with `pgbench -i -I dt` and filled here: every account's 84-character filler is a customer record
// (name, e-mail, street address, phone) drawn from a seeded generator; then `pgbench -i -I vp` adds the primary
// keys. The day of transactions is pgbench's TPC-B-like script, run by one client with a fixed transaction
// count and seed (so the day is the same every run), with the account drawn from an exponential distribution
// (about 63% of the activity on the first twentieth of the accounts, as on a shop's busy customers), 10% of the transactions also
// rewriting part of the customer record, and deterministic history timestamps. Autovacuum is off so rows land
// in the same places every run; with fillfactor 100 every updated row moves to the end of its table, which is
// what a real day does to a dump too. Build first (`pnpm build`): this uses agent/dist/scratch/postgres.js.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Rng } from './prng.mjs';
import { customerFiller } from './textgen.mjs';

const ROOT = resolve(new URL('..', import.meta.url).pathname);

const DAY_SCRIPT = `\\set aid random_exponential(1, 100000 * :scale, 20.0)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
\\set edit random(1, 10)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
\\if :edit = 1
UPDATE pgbench_accounts SET filler = overlay(filler placing md5((:aid)::text || ':' || (:delta)::text) from 30 for 32) WHERE aid = :aid;
\\endif
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, timestamp '2024-06-02 00:00:00' + (:aid % 86400) * interval '1 second');
END;
`;

function run(program, args, { stdin, env } = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(program, args, { stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolvePromise(out) : reject(new Error(`${program.split('/').pop()} exited ${code}: ${err.trim().slice(-2000)}`))));
    if (stdin) stdin(child.stdin).catch(reject);
  });
}

/** Writes lines to a child's stdin, honouring backpressure. */
async function feed(stream, lines) {
  let batch = '';
  for (const line of lines) {
    batch += line;
    if (batch.length >= 1 << 20) {
      if (!stream.write(batch)) await once(stream, 'drain');
      batch = '';
    }
  }
  stream.end(batch);
}

function* accountRows(scale, seed) {
  const rng = new Rng(seed, 'pgbench_accounts');
  const n = 100000 * scale;
  for (let aid = 1; aid <= n; aid++) yield `${aid}\t${Math.floor((aid - 1) / 100000) + 1}\t0\t${customerFiller(rng)}\n`;
}

/**
 * Runs the series. `onDump(day, db)` is called after each dump, with the cluster still up (the run script backs
 * the database up through Lifeboat's postgres source there).
 */
export async function runPgSeries({ out, scale = 50, transactions = 50000, seed = 1, log = console.error, onDump = async () => {}, buildRoot = ROOT }) {
  const { startScratchPostgres, postgresServerBinDir } = await import(join(buildRoot, 'agent/dist/scratch/postgres.js'));
  const { dir: bin } = await postgresServerBinDir();
  mkdirSync(out, { recursive: true });
  const pg = await startScratchPostgres();
  const timings = {};
  const t = (name, started) => (timings[name] = Number(((Date.now() - started) / 1000).toFixed(1)));
  try {
    const conn = ['-h', pg.socketDir, '-p', String(pg.port), '-U', 'postgres'];
    const psql = (sql, db = 'bench') => run(join(bin, 'psql'), [...conn, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', db, '-c', sql]);
    // A scratch cluster: durability is not the point, and autovacuum would make row placement vary by run.
    await psql('ALTER SYSTEM SET synchronous_commit = off', 'postgres');
    await psql('ALTER SYSTEM SET fsync = off', 'postgres');
    await psql('ALTER SYSTEM SET full_page_writes = off', 'postgres');
    await psql("ALTER SYSTEM SET max_wal_size = '4GB'", 'postgres');
    await psql('ALTER SYSTEM SET autovacuum = off', 'postgres');
    await psql("ALTER SYSTEM SET maintenance_work_mem = '256MB'", 'postgres');
    await psql('SELECT pg_reload_conf()', 'postgres');
    await psql('CREATE DATABASE bench', 'postgres');

    let started = Date.now();
    log(`pg-series: pgbench schema, scale ${scale}, filling ${100000 * scale} accounts with customer records`);
    await run(join(bin, 'pgbench'), [...conn, '-i', '-s', String(scale), '-I', 'dt', '-q', 'bench']);
    const rng = new Rng(seed, 'pgbench_small');
    const branches = Array.from({ length: scale }, (_, i) => `${i + 1}\t0\t${customerFiller(rng).slice(0, 84)}\n`);
    const tellers = Array.from({ length: 10 * scale }, (_, i) => `${i + 1}\t${Math.floor(i / 10) + 1}\t0\t${customerFiller(rng).slice(0, 84)}\n`);
    await run(join(bin, 'psql'), [...conn, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'bench', '-c', 'COPY pgbench_branches (bid, bbalance, filler) FROM STDIN'], { stdin: (s) => feed(s, branches) });
    await run(join(bin, 'psql'), [...conn, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'bench', '-c', 'COPY pgbench_tellers (tid, bid, tbalance, filler) FROM STDIN'], { stdin: (s) => feed(s, tellers) });
    await run(join(bin, 'psql'), [...conn, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'bench', '-c', 'COPY pgbench_accounts (aid, bid, abalance, filler) FROM STDIN'], { stdin: (s) => feed(s, accountRows(scale, seed)) });
    await run(join(bin, 'pgbench'), [...conn, '-i', '-s', String(scale), '-I', 'vp', '-q', 'bench']);
    t('init', started);

    const dump = async (day) => {
      const file = join(out, `day${day}.pgdump`);
      rmSync(file, { force: true });
      const s = Date.now();
      await run(join(bin, 'pg_dump'), [...conn, '--format=custom', '--compress=0', '--file', file, 'bench']);
      t(`dump${day}`, s);
      log(`pg-series: day ${day} dump ${(statSync(file).size / 2 ** 20).toFixed(1)} MiB`);
      await onDump(day, { host: '127.0.0.1', port: pg.port, socketDir: pg.socketDir, user: 'postgres', database: 'bench', file });
      return file;
    };
    const day1 = await dump(1);

    started = Date.now();
    log(`pg-series: a day of ${transactions} transactions (one client, seed ${seed})`);
    const script = join(out, 'day.sql');
    writeFileSync(script, DAY_SCRIPT);
    await run(join(bin, 'pgbench'), [...conn, '-n', '-c', '1', '-t', String(transactions), `--random-seed=${seed}`, '-s', String(scale), '-f', script, 'bench']);
    t('transactions', started);
    const day2 = await dump(2);
    return { day1, day2, day1Bytes: statSync(day1).size, day2Bytes: statSync(day2).size, scale, transactions, seed, postgres: pg.version, timings };
  } finally {
    // stop() waits on an unref'd child and unref'd timers: hold the event loop open until it is done.
    const keepAlive = setInterval(() => {}, 60_000);
    await pg.stop().finally(() => clearInterval(keepAlive));
  }
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    console.log('usage: node bench/pg-series.mjs [--out DIR] [--scale 50] [--transactions 50000] [--seed 1]');
    process.exit(0);
  }
  const opt = (name, dflt) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : dflt;
  };
  runPgSeries({ out: resolve(opt('out', join(ROOT, 'bench/out/pg'))), scale: Number(opt('scale', 50)), transactions: Number(opt('transactions', 50000)), seed: Number(opt('seed', 1)) })
    .then((r) => console.log(JSON.stringify(r)))
    .catch((err) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    });
}

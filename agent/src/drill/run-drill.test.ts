import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, link, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentMessages, createLogger, LifeboatError, PROTOCOL_VERSION, type ArtifactForRestore, type DrillCheck, type PostgresStepOptions } from '@lifeboat/shared';
import { JobRunner } from '../runner.js';
import { cleanLeftoverScratch, processAlive, readMarker, SCRATCH_PREFIX } from '../scratch/common.js';
import { startScratchMariadb, type ScratchMariadb } from '../scratch/mariadb.js';
import { startScratchPostgres, type ScratchPostgres } from '../scratch/postgres.js';
import { filesSource } from '../sources/files.js';
import { mysqlSource } from '../sources/mysql.js';
import { postgresSource } from '../sources/postgres.js';
import { sqliteSource } from '../sources/sqlite.js';
import { collect, fakeJobContext } from '../sources/test-context.suite.js';
import { MemoryChunkServer } from './memory-link.suite.js';
import { checkManifest, isTrue } from './checks.js';
import { choosePostgresMajor, postgresMajor } from './scratch-targets.js';
import { runDrill, type DrillJob, type DrillOutcome } from './run-drill.js';

/**
 * The drill executor with real sources and real scratch servers, fed by a memory chunk server instead of the
 * Lifeboat server: artifacts are made by the sources' own backups of real databases and files.
 */

let parent = '';
/** Where the drills put their scratch: must be empty after every drill, whatever happened. */
let scratchParent = '';
let sourceDb: ScratchPostgres;
let server: MemoryChunkServer;
let postgresArtifact: ArtifactForRestore;
let sqliteArtifact: ArtifactForRestore;
let filesArtifact: ArtifactForRestore;

async function sql(database: string, text: string): Promise<void> {
  const client = new pg.Client({ host: sourceDb.socketDir, port: sourceDb.port, user: 'postgres', database });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  parent = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-drilltest-'));
  // The scratch servers run as postgres/mysql: every directory on the way must let them pass.
  await chmod(parent, 0o755);
  scratchParent = path.join(parent, 'scratch');
  const sources = path.join(parent, 'sources');
  await mkdir(scratchParent, { mode: 0o755 });
  await mkdir(sources, { mode: 0o755 });
  await chmod(scratchParent, 0o755);
  await chmod(sources, 0o755);

  sourceDb = await startScratchPostgres({ parentDir: sources });
  await sql('postgres', 'CREATE DATABASE shop');
  await sql('shop', `
    CREATE ROLE shop_owner NOLOGIN;
    CREATE TABLE customers (id int PRIMARY KEY, name text);
    INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 20) g;
    CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, note text);
    INSERT INTO orders (customer, note) SELECT 1 + g % 20, repeat(md5(g::text), 20) FROM generate_series(1, 500) g;
    ALTER TABLE orders OWNER TO shop_owner;
  `);

  // An application tree: files, a nested directory, a hard link, a relative symlink and one leading out of it.
  const app = path.join(parent, 'app');
  await mkdir(path.join(app, 'data', 'nested'), { recursive: true });
  await writeFile(path.join(app, 'README'), 'the application\n');
  await writeFile(path.join(app, 'data', 'a.txt'), 'a'.repeat(100_000));
  await writeFile(path.join(app, 'data', 'nested', 'b.bin'), Buffer.alloc(3000, 7));
  await link(path.join(app, 'data', 'a.txt'), path.join(app, 'data', 'a-again.txt'));
  await symlink('data/a.txt', path.join(app, 'current'));
  await symlink('/etc/hostname', path.join(app, 'hostname'));

  const db = path.join(parent, 'app.sqlite');
  execFileSync('sqlite3', ['-bail', '-init', '/dev/null', db], {
    input: `CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) INSERT INTO notes(body) SELECT 'note ' || i FROM n;`,
  });

  server = new MemoryChunkServer();
  const { ctx } = fakeJobContext();
  const step: PostgresStepOptions = { database: 'shop', host: sourceDb.socketDir, port: sourceDb.port, user: 'postgres', globals: false };
  postgresArtifact = await server.store(await postgresSource.backup(step, ctx), 0);
  sqliteArtifact = await server.store(await sqliteSource.backup({ path: db }, ctx), 1);
  filesArtifact = await server.store(await filesSource.backup({ paths: [app], exclude: [] }, ctx), 2);
  expect(postgresArtifact.chunks.length).toBeGreaterThan(2);
}, 180_000);

afterAll(async () => {
  await sourceDb?.stop();
  await rm(parent, { recursive: true, force: true });
});

function job(artifacts: ArtifactForRestore[], checks: DrillCheck[] = []): DrillJob {
  return { jobId: 'job_drill', drillId: 'drl_test', planId: 'shop', snapshotId: 'snap_test', artifacts, checks };
}

async function drill(drillJob: DrillJob, link = server): Promise<DrillOutcome & { warnings: string[] }> {
  const t = fakeJobContext();
  const outcome = await runDrill(drillJob, t.ctx, { link, keys: null, settings: { scratchParent } });
  return { ...outcome, warnings: t.warnings };
}

/** Nothing of a drill may remain: no scratch directory in its parent. */
async function expectNoScratchLeft(): Promise<void> {
  expect((await readdir(scratchParent)).filter((n) => n.startsWith(SCRATCH_PREFIX))).toEqual([]);
}

/** A process that exists and is not a zombie waiting to be reaped. */
function running(pid: number): boolean {
  if (!processAlive(pid)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function check(outcome: DrillOutcome, name: string) {
  const found = outcome.report.checks.find((c) => c.name === name);
  expect(found, `no check named ${name}; have: ${outcome.report.checks.map((c) => c.name).join(' | ')}`).toBeDefined();
  return found!;
}

describe('runDrill', () => {
  it('restores a postgres + sqlite + files snapshot into scratch and passes, listing every check', async () => {
    const outcome = await drill(
      job(
        [postgresArtifact, sqliteArtifact, filesArtifact],
        [
          { sql: 'SELECT count(*) = 500 FROM orders' },
          // Runs in the restored tree, and finds the scratch database in its environment.
          { command: ['sh', '-c', 'test -f README && test -f data/nested/b.bin && test "$LIFEBOAT_DRILL_PG_DATABASE" = shop && psql -tAc "select count(*) from customers" | grep -qx 20'] },
        ],
      ),
    );
    expect(outcome.report.checks.map((c) => [c.name, c.ok])).toEqual([
      ['postgres shop: chunks and stream verified', true],
      ['postgres shop: tables and row counts', true],
      [`sqlite ${sqliteArtifact.name}: chunks and stream verified`, true],
      [`sqlite ${sqliteArtifact.name}: integrity_check and row counts`, true],
      [`files ${filesArtifact.name}: chunks and stream verified`, true],
      [`files ${filesArtifact.name}: manifest`, true],
      ['sql: SELECT count(*) = 500 FROM orders', true],
      [expect.stringMatching(/^command: sh -c test -f README/), true],
    ]);
    expect(outcome.ok).toBe(true);
    expect(outcome.error).toBeUndefined();
    expect(outcome.summary).toMatch(/^drill passed: 8 checks on 3 artifact\(s\)/);
    expect(outcome.report.bytesRestored).toBe(postgresArtifact.size + sqliteArtifact.size + filesArtifact.size);
    expect(outcome.report.restoreMs).toBeGreaterThan(0);
    expect(check(outcome, 'postgres shop: tables and row counts').detail).toMatch(/row counts match.*public\.customers 20, public\.orders 500/);
    expect(check(outcome, `sqlite ${sqliteArtifact.name}: integrity_check and row counts`).detail).toMatch(/integrity ok.*notes 300/);
    const manifest = check(outcome, `files ${filesArtifact.name}: manifest`).detail;
    // README, a.txt, a-again.txt, b.bin; app, data, nested; current (hostname leads out of the tree).
    expect(manifest).toMatch(/^8 entries as recorded: 4 files \(.*\), 3 directories, 1 symbolic link under /);
    expect(manifest).toMatch(/1 symbolic link leading out of the restored tree .* not recreated/);
    // 9 lines: the 8 restored entries and the link leading out, accounted for.
    expect(manifest).toMatch(/per-file manifest: 9 entries checked \(less 1 symbolic link leading out of the tree\): types, sizes and link targets as recorded, the content of 3 files matching its SHA-256/);
    expect(check(outcome, 'sql: SELECT count(*) = 500 FROM orders').detail).toMatch(/returned true in the restored PostgreSQL database shop/);
    await expectNoScratchLeft();
  });

  it('fails when a stored chunk is damaged, naming the chunk and the artifact, and still reports every check', async () => {
    const damaged = new MemoryChunkServer();
    for (const [id, stored] of server.chunks) damaged.chunks.set(id, Buffer.from(stored));
    const victim = postgresArtifact.chunks[1]!.id;
    damaged.damage(victim);

    const outcome = await drill(job([postgresArtifact, sqliteArtifact], [{ sql: 'SELECT true' }]), damaged);
    expect(outcome.ok).toBe(false);
    const fetched = check(outcome, 'postgres shop: chunks and stream verified');
    expect(fetched.ok).toBe(false);
    expect(fetched.detail).toContain('artifact shop');
    expect(fetched.detail).toContain(victim.slice(0, 16));
    expect(check(outcome, 'postgres shop: tables and row counts')).toMatchObject({ ok: false, detail: expect.stringMatching(/not checked: the artifact could not be fetched intact/) });
    // The other artifact is still drilled; the plan's check is not run on a partial restore.
    expect(check(outcome, `sqlite ${sqliteArtifact.name}: integrity_check and row counts`).ok).toBe(true);
    expect(check(outcome, 'sql: SELECT true')).toMatchObject({ ok: false, detail: expect.stringMatching(/^not run/) });
    expect(outcome.error?.code).toBe('restore_failed');
    expect(outcome.error?.message).toMatch(/^3 of 5 checks failed: postgres shop: chunks and stream verified: artifact shop .*chunk [0-9a-f]{16}/);
    expect(outcome.report.bytesRestored).toBe(sqliteArtifact.size);
    await expectNoScratchLeft();
  });

  it('names the chunk when the damage is in a chunk\'s header, which the codec reports without its id', async () => {
    const damaged = new MemoryChunkServer();
    for (const [id, stored] of server.chunks) damaged.chunks.set(id, Buffer.from(stored));
    const victim = sqliteArtifact.chunks[0]!.id;
    damaged.chunks.get(victim)![0] = 0;
    const outcome = await drill(job([sqliteArtifact]), damaged);
    expect(outcome.ok).toBe(false);
    expect(check(outcome, `sqlite ${sqliteArtifact.name}: chunks and stream verified`).detail).toBe(
      `artifact ${sqliteArtifact.name} (sqlite, step 1): not a Lifeboat chunk (bad header) (chunk ${victim})`,
    );
    await expectNoScratchLeft();
  });

  it('fails the "tables and row counts" check of a dump whose recorded row counts differ from what it restores', async () => {
    const metadata = postgresArtifact.metadata as Extract<ArtifactForRestore['metadata'], { kind: 'postgres' }>;
    const tampered: ArtifactForRestore = {
      ...postgresArtifact,
      metadata: { ...metadata, tables: metadata.tables.map((t) => (t.name === 'orders' ? { ...t, rows: 499 } : t)) },
    };
    const outcome = await drill(job([tampered]));
    expect(outcome.ok).toBe(false);
    expect(check(outcome, 'postgres shop: chunks and stream verified').ok).toBe(true);
    const counts = check(outcome, 'postgres shop: tables and row counts');
    expect(counts.ok).toBe(false);
    expect(counts.detail).toMatch(/orders: 499 rows recorded, 500 restored/);
    expect(outcome.error?.message).toMatch(/^1 of 2 checks failed: postgres shop: tables and row counts: /);
    await expectNoScratchLeft();
  });

  it('fails on a plan sql check that returns false, and on a command check that exits 1', async () => {
    const outcome = await drill(
      job([postgresArtifact, filesArtifact], [{ sql: 'SELECT count(*) = 1 FROM orders' }, { sql: 'SELECT 1 FROM orders' }, { command: ['sh', '-c', 'echo broken >&2; exit 1'] }, { command: ['true'] }]),
    );
    expect(outcome.ok).toBe(false);
    expect(check(outcome, 'sql: SELECT count(*) = 1 FROM orders')).toMatchObject({ ok: false, detail: expect.stringMatching(/returned false in the restored PostgreSQL database shop, not true/) });
    expect(check(outcome, 'sql: SELECT 1 FROM orders')).toMatchObject({ ok: false, detail: expect.stringMatching(/returned 500 rows/) });
    expect(check(outcome, 'command: sh -c echo broken >&2; exit 1')).toMatchObject({ ok: false, detail: expect.stringMatching(/failed \(exit code 1\): broken/) });
    expect(check(outcome, 'command: true').ok).toBe(true);
    expect(outcome.report.checks.filter((c) => !c.ok)).toHaveLength(3);
    expect(outcome.error?.message).toMatch(/^3 of 8 checks failed: /);
    await expectNoScratchLeft();
  });

  it('leaves no postgres process and no scratch directory when cancelled mid-drill', async () => {
    const held = new MemoryChunkServer();
    for (const [id, stored] of server.chunks) held.chunks.set(id, stored);
    const t = fakeJobContext();
    let serverPid = 0;
    // The first chunk request comes once the scratch cluster is up and pg_restore runs: cancel there.
    held.beforeServe = async () => {
      const dirs = (await readdir(scratchParent)).filter((n) => n.startsWith(`${SCRATCH_PREFIX}postgres-`));
      serverPid = (await readMarker(path.join(scratchParent, dirs[0]!)))?.serverPid ?? 0;
      t.abort(new LifeboatError('cancelled', 'cancelled by the test'));
      await new Promise(() => {});
    };
    const err = await runDrill(job([postgresArtifact, filesArtifact], [{ command: ['true'] }]), t.ctx, { link: held, keys: null, settings: { scratchParent } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LifeboatError);
    expect((err as LifeboatError).code).toBe('cancelled');
    expect(serverPid).toBeGreaterThan(0);
    expect(running(serverPid)).toBe(false);
    await expectNoScratchLeft();
  });
});

describe('JobRunner and job.drill', () => {
  it('answers job.started, then job.finished with the report: ok only when every check passed', async () => {
    const link = new MemoryChunkServer();
    for (const [id, stored] of server.chunks) link.chunks.set(id, stored);
    const runner = new JobRunner(link, { forJob: () => null }, createLogger('test', { write: () => {} }), { scratchParent });
    const finished = (jobId: string) =>
      new Promise<ReturnType<(typeof AgentMessages)['job.finished']['parse']>>((resolve) => {
        const poll = setInterval(() => {
          const sent = link.sent.find((m) => m.type === 'job.finished' && (m.payload as { jobId: string }).jobId === jobId);
          if (sent) {
            clearInterval(poll);
            // What the server receives must pass the protocol's own schema.
            resolve(AgentMessages['job.finished'].parse(sent.payload));
          }
        }, 50);
      });

    runner.start({ v: PROTOCOL_VERSION, id: 'm1', type: 'job.drill', payload: { ...job([sqliteArtifact], [{ sql: 'SELECT count(*) = 300 FROM notes' }]), jobId: 'job_pass' } });
    const passed = await finished('job_pass');
    expect(link.sent[0]).toEqual({ type: 'job.started', payload: { jobId: 'job_pass' } });
    expect(passed).toMatchObject({ jobId: 'job_pass', ok: true, summary: expect.stringMatching(/^drill passed: 3 checks/) });
    expect(passed.error).toBeUndefined();
    expect(passed.drill?.checks.every((c) => c.ok)).toBe(true);

    runner.start({ v: PROTOCOL_VERSION, id: 'm2', type: 'job.drill', payload: { ...job([sqliteArtifact], [{ sql: 'SELECT count(*) = 1 FROM notes' }]), jobId: 'job_fail' } });
    const failed = await finished('job_fail');
    expect(failed).toMatchObject({ jobId: 'job_fail', ok: false, error: { code: 'restore_failed', message: expect.stringMatching(/^1 of 3 checks failed: sql: /) } });
    expect(failed.drill?.checks).toHaveLength(3);
    expect(runner.activeJobs).toBe(0);
    await expectNoScratchLeft();
  });
});

describe('MariaDB in a drill', () => {
  let mariadb: ScratchMariadb;
  beforeAll(async () => {
    mariadb = await startScratchMariadb({ parentDir: path.join(parent, 'sources') });
    execFileSync('mariadb', [`--socket=${mariadb.socket}`, '-uroot'], {
      input: `CREATE DATABASE crm; USE crm; CREATE TABLE crm.contacts (id INT PRIMARY KEY, name TEXT);
              INSERT INTO crm.contacts SELECT seq, CONCAT('c', seq) FROM seq_1_to_42;
              CREATE DATABASE blog; CREATE TABLE blog.posts (id INT PRIMARY KEY); INSERT INTO blog.posts SELECT seq FROM seq_1_to_7;`,
    });
  }, 120_000);
  afterAll(async () => {
    await mariadb?.stop();
  });

  it('restores a several-database dump one database at a time and runs sql checks in MariaDB', async () => {
    const { ctx } = fakeJobContext();
    const artifact = await server.store(await mysqlSource.backup({ databases: ['crm', 'blog'], host: mariadb.socket, port: mariadb.port, user: 'root' }, ctx), 0);
    const outcome = await drill(job([artifact], [{ sql: 'SELECT COUNT(*) = 42 FROM contacts' }]));
    expect(outcome.report.checks.map((c) => [c.name, c.ok])).toEqual([
      ['mysql crm blog: chunks and stream verified', true],
      ['mysql crm blog: database crm: tables and row counts', true],
      ['mysql crm blog: database blog: tables and row counts', true],
      ['sql: SELECT COUNT(*) = 42 FROM contacts', true],
    ]);
    expect(outcome.ok).toBe(true);
    expect(check(outcome, 'mysql crm blog: database blog: tables and row counts').detail).toMatch(/posts 7/);
    await expectNoScratchLeft();
  });
});

describe('checks', () => {
  it('compares a restored tree with the manifest, and says what differs', async () => {
    const root = await mkdtemp(path.join(parent, 'manifest-'));
    await mkdir(path.join(root, 'srv', 'app', 'sub'), { recursive: true });
    await writeFile(path.join(root, 'srv', 'app', 'one'), '12345');
    await writeFile(path.join(root, 'srv', 'app', 'sub', 'two'), '123');
    await symlink('one', path.join(root, 'srv', 'app', 'link'));
    const recorded = { kind: 'files' as const, paths: ['/srv/app'], entries: 5, files: 2, directories: 2, symlinks: 1, fileBytes: 8 };
    const signal = new AbortController().signal;
    expect(await checkManifest(root, recorded, [], signal)).toMatchObject({ ok: true, detail: expect.stringMatching(/^5 entries as recorded: 2 files \(8 B\), 2 directories, 1 symbolic link under \/srv\/app/) });

    await rm(path.join(root, 'srv', 'app', 'sub', 'two'));
    const missingFile = await checkManifest(root, recorded, [], signal);
    expect(missingFile.ok).toBe(false);
    expect(missingFile.detail).toMatch(/entries: 5 recorded, 4 restored; files: 2 recorded, 1 restored; fileBytes: 8 recorded, 5 restored/);

    const missingRoot = await checkManifest(root, { ...recorded, paths: ['/srv/app', '/etc/gone'] }, [], signal);
    expect(missingRoot).toMatchObject({ ok: false, detail: expect.stringMatching(/missing from the restored tree: \/etc\/gone/) });
  });

  it('checks every entry of the per-file manifest: passes on an intact tree, names the file whose content differs', async () => {
    const root = await mkdtemp(path.join(parent, 'per-file-'));
    const src = path.join(root, 'src');
    await mkdir(path.join(src, 'sub'), { recursive: true });
    await writeFile(path.join(src, 'one'), 'first file\n');
    await writeFile(path.join(src, 'sub', 'two'), Buffer.alloc(5000, 3));
    await link(path.join(src, 'one'), path.join(src, 'one-again'));
    await symlink('sub/two', path.join(src, 'to-two'));
    await symlink('/etc/hostname', path.join(src, 'outside'));
    const backup = await filesSource.backup({ paths: [src], exclude: [] }, fakeJobContext().ctx);
    const archive = await collect(backup.stream);
    const recorded = await backup.metadata;
    if (recorded.kind !== 'files') throw new Error('not a files artifact');
    expect(recorded.manifest?.entries).toBe(7);

    const target = path.join(root, 'restored');
    const kept = path.join(root, 'manifest.jsonl');
    const restored = await filesSource.restore(Readable.from([archive]), { kind: 'dir', path: target, force: false }, { preserveOwner: false, keepManifestAt: kept }, fakeJobContext().ctx);
    const signal = new AbortController().signal;
    const intact = await checkManifest(target, recorded, restored.skipped, signal, kept);
    expect(intact).toMatchObject({ ok: true, detail: expect.stringMatching(/per-file manifest: 7 entries checked \(less 1 symbolic link leading out of the tree\): .* the content of 2 files matching its SHA-256/) });

    // One byte flipped in a restored file: same size, same counts; only its SHA-256 tells.
    const two = path.join(target, src, 'sub', 'two');
    const content = await readFile(two);
    content[1234] ^= 0xff;
    await writeFile(two, content);
    const flipped = await checkManifest(target, recorded, restored.skipped, signal, kept);
    expect(flipped.ok).toBe(false);
    expect(flipped.detail).toMatch(new RegExp(`1 of 7 entries differ from the per-file manifest: ${src}/sub/two: content differs: SHA-256 [0-9a-f]{16}…, [0-9a-f]{16}… recorded`));

    // A link retargeted and a directory replaced by a file are named too.
    await rm(path.join(target, src, 'to-two'));
    await symlink('one', path.join(target, src, 'to-two'));
    const relinked = await checkManifest(target, recorded, restored.skipped, signal, kept);
    expect(relinked.detail).toMatch(new RegExp(`2 of 7 entries differ .*${src}/to-two: links to one, sub/two recorded`));

    // A manifest that is not the one recorded is not trusted.
    await writeFile(kept, `${await readFile(kept, 'utf8')}{"path":"/x","type":"directory"}\n`);
    expect(await checkManifest(target, recorded, restored.skipped, signal, kept)).toMatchObject({ ok: false, detail: expect.stringMatching(/does not match the SHA-256 recorded at backup/) });
    await rm(kept);
    expect(await checkManifest(target, recorded, restored.skipped, signal, kept)).toMatchObject({ ok: false, detail: expect.stringMatching(/manifest recorded at backup is not in the archive/) });

    // An older backup, without a manifest: counts only, and said so (the flipped byte goes unseen).
    const { manifest: _manifest, ...older } = recorded;
    await rm(path.join(target, src, 'to-two'));
    await symlink('sub/two', path.join(target, src, 'to-two'));
    expect(await checkManifest(target, older, restored.skipped, signal)).toMatchObject({ ok: true, detail: expect.stringMatching(/no per-file manifest recorded \(older backup\); counts compared/) });
  });

  it('takes true, 1, "1", "t" and "true" as a passing answer, nothing else', () => {
    for (const yes of [true, 1, 1n, '1', 't', 'TRUE', ' true ']) expect(isTrue(yes)).toBe(true);
    for (const no of [false, 0, 2, '0', 'f', 'yes', null, undefined, '']) expect(isTrue(no)).toBe(false);
  });
});

describe('scratch for drills', () => {
  it('reads major versions and refuses a server older than the dump', async () => {
    expect(postgresMajor('15.14')).toBe(15);
    expect(postgresMajor('16.2 (Debian 16.2-1)')).toBe(16);
    expect(postgresMajor('9.6.24')).toBe(9);
    expect(postgresMajor('devel')).toBeNull();
    const installed = await choosePostgresMajor(undefined);
    expect(await choosePostgresMajor(installed)).toBe(installed);
    expect(await choosePostgresMajor(9)).toBe(installed);
    await expect(choosePostgresMajor(installed + 50)).rejects.toThrow(new RegExp(`dump comes from PostgreSQL ${installed + 50}.*newest .* is ${installed}.*install postgresql-${installed + 50}`));
  });

  it('cleanLeftoverScratch removes the scratch PostgreSQL of a process that was killed', async () => {
    const dist = fileURLToPath(new URL('../../dist/scratch/postgres.js', import.meta.url));
    expect(existsSync(dist), `${dist} is missing: build first (pnpm exec tsc -b)`).toBe(true);
    const own = path.join(parent, 'killed');
    await mkdir(own, { mode: 0o755 });
    await chmod(own, 0o755);
    const script = `
      const { startScratchPostgres } = await import(${JSON.stringify(dist)});
      const db = await startScratchPostgres({ parentDir: process.env.SCRATCH_PARENT });
      process.stdout.write(JSON.stringify({ dir: db.dir, pid: db.pid }) + '\\n');
      setInterval(() => {}, 60_000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, SCRATCH_PARENT: own }, stdio: ['ignore', 'pipe', 'inherit'] });
    const started = await new Promise<{ dir: string; pid: number }>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!) as { dir: string; pid: number });
      });
      child.once('exit', (code) => reject(new Error(`the child exited (${code}) before starting PostgreSQL`)));
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    // The killed process had no chance to stop its server.
    expect(running(started.pid)).toBe(true);
    expect(existsSync(started.dir)).toBe(true);

    const removed = await cleanLeftoverScratch(own);
    expect(removed).toEqual([started.dir]);
    for (let i = 0; i < 50 && running(started.pid); i++) await new Promise((r) => setTimeout(r, 100));
    expect(running(started.pid)).toBe(false);
    expect(existsSync(started.dir)).toBe(false);
  });
});

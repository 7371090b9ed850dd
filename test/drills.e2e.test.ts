import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { readSnapshotManifest } from '@lifeboat/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startScratchMariadb } from '../agent/src/scratch/mariadb.js';
import { startScratchPostgres, type ScratchPostgres } from '../agent/src/scratch/postgres.js';
import { writeBigFile } from './tree.js';
import { damageStoredChunk, enrollAgent, snapshotChunkIds, startTestServer, tempDir, waitForJob, waitUntil, type JobLike, type TestAgent, type TestServer } from './harness.js';

interface DrillLike {
  id: string;
  status: string;
  trigger: string;
  agentName: string | null;
  restoreMs: number | null;
  checks: { name: string; ok: boolean; detail: string }[];
  error: string | null;
}

/**
 * The drill agent's temp directory (its TMPDIR), where its scratch goes: apart from /tmp, where the scratch of
 * other test files running at the same time comes and goes.
 */
let drillTmp = '';
const scratchDirs = async () => (await readdir(drillTmp)).filter((n) => n.startsWith('lifeboat-scratch-'));
/** Database servers running out of the drill agent's scratch directories (the test's own source database lives elsewhere). */
const scratchServers = () => {
  try {
    return execFileSync('pgrep', ['-a', '-f', 'lifeboat-scratch-'], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.includes(join(drillTmp, 'lifeboat-scratch-')));
  } catch {
    return [];
  }
};

describe('restore drills on an isolated agent', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let pgServer: ScratchPostgres;
  let server: TestServer;
  let app: TestAgent;
  let driller: TestAgent;
  let files: string;

  beforeAll(async () => {
    dir = await tempDir('drills');
    // The source database lives in the test's own directory, apart from the drill agent's scratch.
    await chmod(dir.path, 0o711);
    pgServer = await startScratchPostgres({ parentDir: dir.path });
    const client = new pg.Client({ host: '127.0.0.1', port: pgServer.port, user: 'postgres', database: 'postgres' });
    await client.connect();
    await client.query('create database shop');
    await client.end();
    const shop = new pg.Client({ host: '127.0.0.1', port: pgServer.port, user: 'postgres', database: 'shop' });
    await shop.connect();
    await shop.query(`create table customers (id serial primary key, name text); insert into customers (name) select 'c' || i from generate_series(1, 4321) i;`);
    await shop.end();
    files = join(dir.path, 'files');
    await mkdir(join(files, 'docs'), { recursive: true });
    await writeFile(join(files, 'docs/a.txt'), 'drill me\n'.repeat(1000));
    await writeBigFile(join(files, 'docs/b.bin'), 3 * 1024 * 1024);
    // Enough files for the per-file manifest to keep its unchanged lines from the previous backup (files cache).
    await mkdir(join(files, 'notes'));
    for (let i = 0; i < 60; i++) await writeFile(join(files, 'notes', `note-${String(i).padStart(2, '0')}.txt`), `note ${i}\n`.repeat(20 + i));
    server = await startTestServer(join(dir.path, 'server'));
    app = await enrollAgent(server, dir.path, 'app-1');
    drillTmp = join(dir.path, 'drill-tmp');
    await mkdir(drillTmp);
    // As /tmp: the scratch servers run as their own system users.
    await chmod(drillTmp, 0o1777);
    driller = await enrollAgent(server, dir.path, 'drill-1', ['role=drill'], { TMPDIR: drillTmp });
    await app.start();
    await driller.start();
  });

  afterAll(async () => {
    await app?.proc?.kill();
    await driller?.proc?.kill();
    await server?.proc.kill();
    await pgServer?.stop();
    await dir?.cleanup();
  });

  const plan = (drill: Record<string, unknown>) => ({
    plans: [{
      id: 'shop',
      agent: 'app-1',
      steps: [{ postgres: { database: 'shop', host: '127.0.0.1', port: pgServer.port, user: 'postgres' } }, { files: { paths: [files] } }],
      drill: { checks: [{ sql: 'select count(*) = 4321 from customers' }, { command: ['test', '-s', 'docs/a.txt'] }], ...drill },
    }],
  });

  const drills = async () => (await server.api<{ drills: DrillLike[] }>('GET', '/v1/drills?plan=shop')).body.drills;

  it('runs a scheduled drill on the drill agent that passes every check, with its restore time', async () => {
    expect((await server.api('POST', '/v1/plans', plan({}))).status).toBe(200);
    const { body } = await server.api<{ job: JobLike }>('POST', '/v1/plans/shop/backup');
    expect((await waitForJob(server, body.job.id)).status).toBe('succeeded');
    // Every 3 seconds, for the test.
    expect((await server.api('POST', '/v1/plans', plan({ schedule: '*/3 * * * * *' }))).status).toBe(200);
    let passed: DrillLike | undefined;
    await waitUntil(async () => {
      passed = (await drills()).find((d) => d.trigger === 'schedule' && (d.status === 'passed' || d.status === 'failed'));
      return passed !== undefined;
    }, 'a scheduled drill to finish', 120_000, 250);
    expect((await server.api('POST', '/v1/plans', plan({}))).status).toBe(200);
    expect(passed!.status, JSON.stringify(passed)).toBe('passed');
    expect(passed!.agentName).toBe('drill-1');
    expect(passed!.restoreMs).toBeGreaterThan(0);
    const names = passed!.checks.map((c) => c.name).join('\n');
    expect(names).toMatch(/row counts/);
    expect(names).toMatch(/select count/);
    expect(passed!.checks.every((c) => c.ok)).toBe(true);
    // Everything the drill made is gone.
    await waitUntil(async () => (await scratchDirs()).length === 0, 'scratch dirs removed', 30_000);
  });

  it('`lifeboat drill run` waits and prints the verdict; a drill is never sent to an agent the selector does not match', async () => {
    // A second backup after an edit: its per-file manifest keeps the unchanged lines from the first one's
    // chunks, and the drill checks that manifest (its SHA-256 as recorded, then every file against it).
    await writeFile(join(files, 'notes', 'note-30.txt'), 'edited\n');
    const { body } = await server.api<{ job: JobLike }>('POST', '/v1/plans/shop/backup');
    const second = await waitForJob(server, body.job.id);
    expect(second.status).toBe('succeeded');
    expect(second.summary).toMatch(/ 1 file\(s\) read/);
    const filesChunksOf = async (file: string) => {
      const read = readSnapshotManifest(await readFile(join(server.dataDir, 'store', 'snapshots', file)));
      if (!read.ok) throw new Error(read.problems.join('; '));
      return read.manifest.artifacts.find((a) => a.kind === 'files')!.chunks;
    };
    const [firstFile] = (await readdir(join(server.dataDir, 'store', 'snapshots'))).filter((f) => f !== `${second.snapshotId}.json`);
    // The first backup's manifest entry is in its last chunk; the second lists slices of that chunk.
    const manifestChunk = (await filesChunksOf(firstFile!)).at(-1)!.id;
    expect((await filesChunksOf(`${second.snapshotId}.json`)).filter((c) => c.id === manifestChunk && c.offset !== undefined).length).toBeGreaterThan(0);
    const res = await server.admin(['drill', 'run', 'shop']);
    expect(res.code, res.stderr + res.stdout).toBe(0);
    expect(res.stdout).toMatch(/PASS/);
    expect(res.stdout).toMatch(/per-file manifest: 6\d entries checked/);
    expect((await server.api('POST', '/v1/plans', plan({ on: { labels: { role: 'nowhere' } } }))).status).toBe(200);
    const refused = await server.api<{ error: { code: string; message: string } }>('POST', '/v1/plans/shop/drill', {});
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toMatch(/no enrolled agent matches role=nowhere/);
    expect((await server.api('POST', '/v1/plans', plan({}))).status).toBe(200);
  });

  it('fails a drill of a snapshot whose stored data was damaged, naming the chunk and the artifact', async () => {
    const snapshots = (await server.api<{ snapshots: { id: string; artifacts: { kind: string; name: string }[] }[] }>('GET', '/v1/snapshots?plan=shop')).body.snapshots;
    const store = join(server.dataDir, 'store');
    const victim = (await snapshotChunkIds(store, snapshots[0]!.id))[0]!;
    const damage = await damageStoredChunk(store, victim);
    const { body } = await server.api<{ drill: DrillLike; job: JobLike }>('POST', '/v1/plans/shop/drill', { snapshotId: snapshots[0]!.id });
    await waitForJob(server, body.job.id);
    const drill = (await server.api<{ drill: DrillLike }>('GET', `/v1/drills/${body.drill.id}`)).body.drill;
    expect(drill.status).toBe('failed');
    const said = `${drill.error} ${drill.checks.map((c) => c.detail).join(' ')}`;
    expect(said).toContain(victim.slice(0, 12));
    expect(said).toMatch(/artifact|postgres|files/);
    // Put it back for what follows.
    await damage.undo();
  });

  it('never sends a drill to the snapshot\'s own agent, even when its labels match', async () => {
    // An empty selector matches every agent; the source agent (app-1) must still be passed over.
    expect((await server.api('POST', '/v1/plans', plan({ on: { labels: {} } }))).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      const { body } = await server.api<{ drill: DrillLike; job: JobLike }>('POST', '/v1/plans/shop/drill', {});
      expect(body.drill.agentName).toBe('drill-1');
      await waitForJob(server, body.job.id);
    }
    expect((await server.api('POST', '/v1/plans', plan({}))).status).toBe(200);
  });

  it('drills a second application agent\'s MariaDB and files backup on the same drill agent', async () => {
    const maria = await startScratchMariadb({ parentDir: dir.path });
    try {
      const conn = await mysql.createConnection({ socketPath: maria.socket, user: 'root', multipleStatements: true });
      await conn.query(`create database crm; use crm; create table deals (id int primary key, amount int); insert into deals select seq, seq * 7 from seq_1_to_777;`);
      await conn.end();
      const crmFiles = join(dir.path, 'crm-files');
      await mkdir(crmFiles);
      await writeFile(join(crmFiles, 'invoice.pdf'), 'an invoice');
      const second = await enrollAgent(server, dir.path, 'app-2');
      await second.start();
      try {
        const crmPlan = { plans: [{ id: 'crm', agent: 'app-2', steps: [{ mysql: { databases: ['crm'], host: maria.socket, user: 'root' } }, { files: { paths: [crmFiles] } }], drill: { checks: [{ sql: 'select count(*) = 777 from deals' }] } }] };
        expect((await server.api('POST', '/v1/plans', crmPlan)).status).toBe(200);
        const { body } = await server.api<{ job: JobLike }>('POST', '/v1/plans/crm/backup');
        const backup = await waitForJob(server, body.job.id);
        expect(backup.status, JSON.stringify(backup.error)).toBe('succeeded');
        const res = await server.admin(['drill', 'run', 'crm']);
        expect(res.code, res.stderr + res.stdout).toBe(0);
        const drill = (await server.api<{ drills: DrillLike[] }>('GET', '/v1/drills?plan=crm')).body.drills[0]!;
        expect(drill.status).toBe('passed');
        expect(drill.agentName).toBe('drill-1');
        expect(drill.checks.some((c) => /deals|row counts/.test(c.name + c.detail))).toBe(true);
      } finally {
        await second.proc?.kill();
      }
    } finally {
      await maria.stop();
    }
  });

  it('leaves no scratch server and no scratch directory when the drill agent is killed mid-drill and restarted', async () => {
    await writeBigFile(join(files, 'docs/large.bin'), 300 * 1024 * 1024);
    const { body } = await server.api<{ job: JobLike }>('POST', '/v1/plans/shop/backup');
    expect((await waitForJob(server, body.job.id)).status).toBe('succeeded');
    const started = await server.api<{ drill: DrillLike; job: JobLike }>('POST', '/v1/plans/shop/drill', {});
    await waitUntil(async () => (await scratchServers()).length > 0 || (await scratchDirs()).length > 0, 'the drill to make its scratch', 60_000, 50);
    driller.proc!.child.kill('SIGKILL');
    const job = await waitForJob(server, started.body.job.id);
    expect(job.status).toBe('failed');
    await driller.start();
    await waitUntil(async () => scratchServers().length === 0 && (await scratchDirs()).length === 0, 'leftovers cleaned at the next start', 60_000, 250);
    const drill = (await server.api<{ drill: DrillLike }>('GET', `/v1/drills/${started.body.drill.id}`)).body.drill;
    expect(drill.status).toBe('failed');
  });
});

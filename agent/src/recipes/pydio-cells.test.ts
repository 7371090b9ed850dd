import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { afterRestore, expandRecipe } from './index.js';
import { replaceHost } from './pydio-cells.js';
import { failure, recipeTestContext, testOptions, writeTree } from './test-env.suite.js';

let base = '';
let secretsDir = '';
beforeAll(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'lifeboat-cells-'));
  secretsDir = path.join(base, 'state/recipe-secrets');
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

const DB_PASSWORD = 'P@ss:w/rd';

/** pydio.json as Cells 4 writes it (trimmed): the install's database, sites, and local datasources. */
function pydioJson(dataParent: string, workingDir: string): string {
  const config = {
    databases: {
      '6d3e8a6f4c5b1e2d3c4b5a69788796a5b4c3d2e1': { driver: 'mysql', dsn: `pydio:${DB_PASSWORD}@tcp(192.168.1.10:3306)/cells?parseTime=true` },
      'bolt-0a1b2c3d': { driver: 'boltdb', dsn: `${workingDir}/services/pydio.grpc.tasks/tasks.db` },
    },
    defaults: {
      database: { $ref: '#/databases/6d3e8a6f4c5b1e2d3c4b5a69788796a5b4c3d2e1' },
      datasource: 'pydiods1',
      sites: [{ Binds: ['192.168.1.10:8080'], TLSConfig: { SelfSigned: {} }, ReverseProxyURL: 'https://192.168.1.10:8080' }],
    },
    frontend: { plugin: { 'core.pydio': { APPLICATION_TITLE: 'Cells at 192.168.1.10' } } },
    services: {
      'pydio.grpc.data.objects': { sources: ['local1'] },
      'pydio.grpc.data.objects.local1': {
        ApiKey: 'RtbKjn5uBgZUfStB',
        ApiSecret: '9967efe5-d994-42d9-b572-49421fe266c6',
        LocalFolder: dataParent,
        Name: 'local1',
        PeerAddress: '192.168.1.10',
        RunningPort: 33355,
      },
      'pydio.grpc.data.objects.gateway1': { ApiKey: 'AKIA…', ApiSecret: 'uuid', EndpointUrl: 'https://s3.example.org', Name: 'gateway1', RunningPort: 9001, StorageType: 1 },
      'pydio.grpc.data.sync': { sources: ['pydiods1', 'personal', 'cellsdata', 'versions', 'thumbnails'] },
      'pydio.grpc.data.sync.pydiods1': {
        Name: 'pydiods1',
        ObjectsBucket: 'pydiods1',
        ObjectsHost: '192.168.1.10',
        ObjectsPort: 33355,
        ObjectsServiceName: 'local1',
        PeerAddress: '192.168.1.10',
        StorageConfiguration: { folder: `${dataParent}/pydiods1`, normalize: 'false' },
        StorageType: 'LOCAL',
      },
      'pydio.grpc.data.sync.personal': {
        Name: 'personal',
        PeerAddress: '192.168.1.10',
        StorageConfiguration: { folder: `${dataParent}/personal`, normalize: 'false' },
      },
      'pydio.grpc.data.index.pydiods1': { dsn: 'default', PeerAddress: '192.168.1.10', tables: { commits: 'data_pydiods1_commits' } },
      'pydio.web.oauth': { insecureRedirects: ['#insecure_binds...#/auth/callback'] },
    },
    version: '4.4.3',
  };
  return JSON.stringify(config, null, 2) + '\n';
}

function cells(name: string): { workingDir: string; dataParent: string } {
  const root = path.join(base, name);
  const workingDir = path.join(root, 'var/cells');
  const dataParent = path.join(root, 'srv/cells-data');
  writeTree(root, {
    'var/cells/pydio.json': pydioJson(dataParent, workingDir),
    'var/cells/pydio-vault.json': '{}',
    'var/cells/cells-vault-key': 'key',
    'var/cells/services/pydio.grpc.tasks/tasks.db': 'bolt',
    'var/cells/logs/pydio.log': 'log',
    'srv/cells-data/.minio.sys/format.json': '{}',
    'srv/cells-data/pydiods1/file.txt': 'data',
    'srv/cells-data/personal/admin/notes.txt': 'data',
  });
  return { workingDir, dataParent };
}

describe('pydio-cells recipe', () => {
  it('dumps the MySQL database from pydio.json first, then the working dir and the datasources\' parent folder', async () => {
    const { workingDir, dataParent } = cells('install');
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'pydio-cells', path: workingDir }, ctx, testOptions(secretsDir));
    expect(steps.map((s) => Object.keys(s)[0])).toEqual(['mysql', 'files']);
    expect(steps[0]!.mysql).toMatchObject({ databases: ['cells'], host: '192.168.1.10', port: 3306, user: 'pydio' });
    expect(readFileSync(steps[0]!.mysql!.passwordFile!, 'utf8')).toBe(DB_PASSWORD);
    expect(JSON.stringify(steps)).not.toContain(DB_PASSWORD);
    // The PARENT of the datasources (it holds .minio.sys), not each datasource folder.
    expect(steps[1]!.files!.paths).toEqual([workingDir, dataParent]);
    expect(warnings).toEqual([expect.stringContaining('"gateway1" is a remote S3/gateway service')]);
  });

  it('takes pydio.json itself as the path too', async () => {
    const { workingDir } = cells('by-file');
    const steps = await expandRecipe({ name: 'pydio-cells', path: path.join(workingDir, 'pydio.json') }, recipeTestContext().ctx, testOptions(secretsDir));
    expect(steps[1]!.files!.paths[0]).toBe(workingDir);
  });

  it('reads an older pydio.json whose defaults.database is the id itself', async () => {
    const dir = path.join(base, 'old/cells');
    writeTree(dir, {
      'pydio.json': JSON.stringify({ databases: { abc: { driver: 'mysql', dsn: 'root@tcp(localhost:3306)/pydio' } }, defaults: { database: 'abc' } }),
    });
    const steps = await expandRecipe({ name: 'pydio-cells', path: dir }, recipeTestContext().ctx, testOptions(secretsDir));
    expect(steps[0]!.mysql).toMatchObject({ databases: ['pydio'], host: 'localhost', user: 'root' });
    expect(steps[0]!.mysql!.passwordFile).toBeUndefined();
    expect(steps[1]!.files!.paths).toEqual([dir]);
  });

  it('broken JSON or DSN fails naming pydio.json and the line', async () => {
    const dir = path.join(base, 'broken/cells');
    const file = path.join(dir, 'pydio.json');
    writeTree(dir, { 'pydio.json': '{\n  "databases": {\n    "x": {"driver": "mysql", "dsn": "u:p@tcp(h:3306)/db"},\n  }\n}\n' });
    let err = await failure(expandRecipe({ name: 'pydio-cells', path: dir }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${file}:4: not valid JSON: expected a key in double quotes`);

    writeFileSync(file, '{\n  "databases": {\n    "x": {\n      "driver": "mysql",\n      "dsn": "u:p@tcp(h:99999)/db"\n    }\n  },\n  "defaults": {"database": "x"}\n}\n');
    err = await failure(expandRecipe({ name: 'pydio-cells', path: dir }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${file}:5: cannot read the MySQL DSN of database "x": the port "99999" is not a port number`);
  });
});

describe('pydio-cells after restore', () => {
  it('rewrites binds, external URLs, peers and the DSN host in the restored pydio.json, and reports a rewrite that matched nothing', async () => {
    const { workingDir, dataParent } = cells('restore-source');
    // A restore into /restore puts the archived tree under it, at its absolute path.
    const restoreDir = path.join(base, 'restored');
    const restoredWorkingDir = path.join(restoreDir, workingDir);
    const original = pydioJson(dataParent, workingDir);
    writeTree(restoredWorkingDir, { 'pydio.json': original });
    writeTree(path.join(restoreDir, dataParent), { '.minio.sys/format.json': '{}', 'pydiods1/pydio.json': '{"not":"a config"}' });
    const restoredConfig = path.join(restoredWorkingDir, 'pydio.json');
    chmodSync(restoredConfig, 0o600);

    const { ctx, warnings } = recipeTestContext();
    const lines = await afterRestore(
      'pydio-cells',
      restoreDir,
      {
        rewriteHosts: [
          { from: '192.168.1.10', to: '10.0.0.5' },
          { from: 'old-host.example.org', to: 'new-host.example.org' },
        ],
      },
      ctx,
    );
    const rewritten = readFileSync(restoredConfig, 'utf8');
    const config = JSON.parse(rewritten) as {
      databases: Record<string, { dsn: string }>;
      defaults: { sites: { Binds: string[]; ReverseProxyURL: string }[] };
      frontend: { plugin: { 'core.pydio': { APPLICATION_TITLE: string } } };
      services: Record<string, { PeerAddress?: string; ObjectsHost?: string }>;
    };
    expect(config.defaults.sites[0]!.Binds).toEqual(['10.0.0.5:8080']);
    expect(config.defaults.sites[0]!.ReverseProxyURL).toBe('https://10.0.0.5:8080');
    expect(config.services['pydio.grpc.data.objects.local1']!.PeerAddress).toBe('10.0.0.5');
    expect(config.services['pydio.grpc.data.sync.pydiods1']!.PeerAddress).toBe('10.0.0.5');
    expect(config.services['pydio.grpc.data.sync.pydiods1']!.ObjectsHost).toBe('10.0.0.5');
    expect(config.databases['6d3e8a6f4c5b1e2d3c4b5a69788796a5b4c3d2e1']!.dsn).toBe(`pydio:${DB_PASSWORD}@tcp(10.0.0.5:3306)/cells?parseTime=true`);
    // Not a host value: left as it was.
    expect(config.frontend.plugin['core.pydio'].APPLICATION_TITLE).toBe('Cells at 192.168.1.10');
    // Only the changed values differ: formatting and the rest are byte for byte the same.
    expect(rewritten.replaceAll('10.0.0.5', '192.168.1.10')).toBe(original);
    expect(statSync(restoredConfig).mode & 0o777).toBe(0o600);
    // A datasource folder's own files are never taken for a Cells config.
    expect(readFileSync(path.join(restoreDir, dataParent, 'pydiods1/pydio.json'), 'utf8')).toBe('{"not":"a config"}');

    expect(lines[0]).toMatch(new RegExp(`^pydio-cells: ${restoredConfig.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: 192\\.168\\.1\\.10 → 10\\.0\\.0\\.5 in 8 value\\(s\\): `));
    expect(lines[0]).toContain('defaults.sites[0].Binds[0]');
    expect(lines[1]).toContain('old-host.example.org → new-host.example.org matched nothing');
    expect(warnings).toEqual([lines[1]]);
  });

  it('says so when the restore holds no pydio.json, and gives the hint when no rewrite was asked', async () => {
    const empty = path.join(base, 'restored-empty');
    writeTree(empty, { 'x/y.txt': 'y' });
    const { ctx } = recipeTestContext();
    expect(await afterRestore('pydio-cells', empty, { rewriteHosts: [{ from: 'a', to: 'b' }] }, ctx)).toEqual([
      `pydio-cells: no pydio.json under ${empty}; no host rewritten (a=b not applied)`,
    ]);
    const { workingDir } = cells('hint');
    const lines = await afterRestore('pydio-cells', path.dirname(workingDir), { rewriteHosts: [] }, ctx);
    expect(lines).toEqual([expect.stringContaining('--rewrite-host OLD=NEW')]);
  });

  it('matches whole host names only', () => {
    expect(replaceHost('10.0.0.10:8080 10.0.0.1:80', '10.0.0.1', 'X')).toEqual({ text: '10.0.0.10:8080 X:80', count: 1 });
    expect(replaceHost('https://cells.example.org/ cells:8080 CELLS', 'cells', 'new')).toEqual({ text: 'https://cells.example.org/ new:8080 new', count: 2 });
  });
});

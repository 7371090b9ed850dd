import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Step } from '@lifeboat/shared';
import { freePort } from '../scratch/common.js';
import { expandRecipe } from './index.js';
import { failure, recipeTestContext, testOptions, writeTree } from './test-env.suite.js';

let base = '';
let secretsDir = '';

/** A stand-in for Elasticsearch's snapshot API: records requests, answers as configured. */
interface FakeSearch {
  url: string;
  requests: { method: string; url: string; authorization?: string }[];
  repositories: Record<string, unknown>;
  snapshotState: string;
  server: Server;
}
let search: FakeSearch;

beforeAll(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'lifeboat-liferay-'));
  secretsDir = path.join(base, 'state/recipe-secrets');
  const requests: FakeSearch['requests'] = [];
  const state = { repositories: { lifeboat: { type: 'fs', settings: { location: '/backups/lifeboat' } } } as Record<string, unknown>, snapshotState: 'SUCCESS' };
  const server = createServer((req: IncomingMessage, res) => {
    requests.push({ method: req.method!, url: req.url!, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    res.setHeader('content-type', 'application/json');
    if (req.headers.authorization !== `Basic ${Buffer.from('elastic:es p@ss').toString('base64')}`) {
      res.statusCode = 401;
      res.end('{"error":"unauthorized"}');
      return;
    }
    if (req.method === 'GET' && req.url === '/_snapshot') {
      res.end(JSON.stringify(search.repositories));
      return;
    }
    const m = /^\/_snapshot\/([^/]+)\/([^/?]+)\?wait_for_completion=true$/.exec(req.url!);
    if (req.method === 'PUT' && m) {
      res.end(JSON.stringify({ snapshot: { snapshot: m[2], repository: m[1], indices: ['liferay-20097'], state: search.snapshotState, failures: [] } }));
      return;
    }
    res.statusCode = 404;
    res.end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  search = { url: `http://127.0.0.1:${port}`, requests, server, ...state };
});
afterAll(async () => {
  await new Promise((resolve) => search.server.close(resolve));
  rmSync(base, { recursive: true, force: true });
});

const DB_PASSWORD = 'lr=p@ss:w\\rd';

/** Liferay Home of a DXP 7.4 Tomcat bundle: properties, data/, osgi/ (with configs), license/, logs/, tomcat. */
function liferayHome(name: string, files: Record<string, string> = {}): string {
  const home = path.join(base, name, 'opt/liferay');
  writeTree(home, {
    'portal-ext.properties': `# Database
jdbc.default.driverClassName=com.mysql.cj.jdbc.Driver
jdbc.default.url=jdbc:mysql://db.internal:3307/lportal?characterEncoding=UTF-8&\\
    dontTrackOpenResources=true&holdResultsOpenOverStatementClose=true&serverTimezone=GMT&useFastDateParsing=false&useUnicode=true
jdbc.default.username=liferay
jdbc.default.password=wrong-one-overridden-below
include-and-override=\${liferay.home}/portal-db.properties
`,
    'portal-db.properties': `jdbc.default.password=${DB_PASSWORD.replace(/\\/g, '\\\\').replace(/=/g, '\\=').replace(/:/g, '\\:')}\n`,
    'portal-setup-wizard.properties': 'admin.email.from.address=test@liferay.com\nsetup.wizard.enabled=false\n',
    'system-ext.properties': 'user.timezone=GMT\n',
    'data/document_library/20097/file.bin': 'doc',
    'data/elasticsearch7/indices/x': 'idx',
    'osgi/modules/custom.jar': 'jar',
    'osgi/configs/com.liferay.portal.search.elasticsearch7.configuration.ElasticsearchConfiguration.config': `productionModeEnabled=B"true"
remoteClusterConnectionId="remote"
`,
    'osgi/configs/com.liferay.portal.search.elasticsearch7.configuration.ElasticsearchConnectionConfiguration-remote.config': `authenticationEnabled=B"true"
connectionId="remote"
networkHostAddresses=[ \\
  "${search.url}", \\
  "http://es2.internal:9200" \\
]
password="es p@ss"
username="elastic"
`,
    'license/activation-key.xml': '<key/>',
    'logs/liferay.2025-03-04.log': 'log',
    'tomcat-9.0.80/conf/server.xml': '<Server/>',
    'tomcat-9.0.80/webapps/ROOT/WEB-INF/web.xml': '<web-app/>',
    'tomcat-9.0.80/temp/x.tmp': 'tmp',
    'tomcat-9.0.80/work/Catalina/x': 'work',
    ...files,
  });
  return home;
}

/** Runs a command step as the command source will: argv, no shell; returns exit code and output. */
function runCommand(step: Step): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [program, ...args] = step.command!.run;
  return new Promise((resolve) => {
    const child = spawn(program!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('liferay recipe', () => {
  it('dumps the database, snapshots the search indexes, then archives Liferay Home and the app server', async () => {
    const home = liferayHome('mysql');
    const { ctx, warnings } = recipeTestContext('job_Ab3');
    const steps = await expandRecipe({ name: 'liferay', path: home }, ctx, testOptions(secretsDir));
    expect(steps.map((s) => Object.keys(s)[0])).toEqual(['mysql', 'command', 'files']);
    expect(steps[0]!.mysql).toMatchObject({ databases: ['lportal'], host: 'db.internal', port: 3307, user: 'liferay' });
    // The included portal-db.properties overrides portal-ext.properties, as in Liferay.
    expect(readFileSync(steps[0]!.mysql!.passwordFile!, 'utf8')).toBe(DB_PASSWORD);

    const command = steps[1]!.command!;
    expect(command.name).toBe('elasticsearch-snapshot');
    expect(command.run[0]).toBe(process.execPath);
    expect(command.run.slice(3, 8)).toEqual(['--', search.url, 'lifeboat', 'lifeboat-20250304t050607-job_ab3', 'elastic']);

    const tomcat = path.join(home, 'tomcat-9.0.80');
    expect(steps[2]!.files).toEqual({
      paths: [
        ...['portal-ext.properties', 'portal-setup-wizard.properties', 'system-ext.properties', 'portal-db.properties', 'data', 'osgi', 'license', 'logs'].map((p) => path.join(home, p)),
        tomcat,
      ],
      exclude: [`${tomcat}/temp/**`, `${tomcat}/work/**`],
    });

    const json = JSON.stringify(steps);
    expect(json).not.toContain(DB_PASSWORD);
    expect(json).not.toContain(JSON.stringify(DB_PASSWORD).slice(1, -1));
    expect(json).not.toContain('es p@ss');
    expect(warnings).toEqual([]);

    // The command step takes the snapshot with the configured credentials, read from a file, and prints the answer.
    search.requests.length = 0;
    const run = await runCommand(steps[1]!);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(run.stdout)).toMatchObject({ snapshot: { snapshot: 'lifeboat-20250304t050607-job_ab3', repository: 'lifeboat', state: 'SUCCESS' } });
    expect(search.requests).toEqual([
      { method: 'PUT', url: '/_snapshot/lifeboat/lifeboat-20250304t050607-job_ab3?wait_for_completion=true', authorization: `Basic ${Buffer.from('elastic:es p@ss').toString('base64')}` },
    ]);
  });

  it('a snapshot that does not end in SUCCESS fails the command step', async () => {
    const home = liferayHome('partial');
    const steps = await expandRecipe({ name: 'liferay', path: home }, recipeTestContext().ctx, testOptions(secretsDir));
    search.snapshotState = 'PARTIAL';
    try {
      const run = await runCommand(steps[1]!);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/ended PARTIAL/);
    } finally {
      search.snapshotState = 'SUCCESS';
    }
  });

  it('skips the snapshot with a clear warning when the engine has no usable repository or does not answer', async () => {
    const home = liferayHome('no-repo');
    search.repositories = {};
    try {
      const { ctx, warnings } = recipeTestContext();
      const steps = await expandRecipe({ name: 'liferay', path: home }, ctx, testOptions(secretsDir));
      expect(steps.map((s) => Object.keys(s)[0])).toEqual(['mysql', 'files']);
      expect(warnings).toEqual([expect.stringMatching(/has no snapshot repository; register one named "lifeboat".*no search snapshot taken/)]);
    } finally {
      search.repositories = { lifeboat: {} };
    }
    const closedPort = await freePort();
    const down = liferayHome('es-down', {
      'osgi/configs/com.liferay.portal.search.elasticsearch7.configuration.ElasticsearchConnectionConfiguration-remote.config': `connectionId="remote"\nnetworkHostAddresses=["http://127.0.0.1:${closedPort}"]\n`,
    });
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'liferay', path: down }, ctx, testOptions(secretsDir));
    expect(steps.map((s) => Object.keys(s)[0])).toEqual(['mysql', 'files']);
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`Elasticsearch at http://127\\.0\\.0\\.1:${closedPort} .*did not answer \\(ECONNREFUSED\\); no search snapshot taken`))]);
  });

  it('reads PostgreSQL from portal-setup-wizard.properties, and says why there is no search snapshot on a sidecar', async () => {
    const home = liferayHome('postgres', {
      'portal-setup-wizard.properties': 'jdbc.default.url=jdbc:postgresql://pg.internal:5433/lportal\njdbc.default.username=lr\njdbc.default.password=pg-secret\n',
      'osgi/configs/com.liferay.portal.search.elasticsearch7.configuration.ElasticsearchConfiguration.config': 'productionModeEnabled=B"false"\n',
    });
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'liferay', path: home }, ctx, testOptions(secretsDir));
    expect(steps.map((s) => Object.keys(s)[0])).toEqual(['postgres', 'files']);
    expect(steps[0]!.postgres).toMatchObject({ database: 'lportal', host: 'pg.internal', port: 5433, user: 'lr' });
    expect(readFileSync(steps[0]!.postgres!.passwordFile!, 'utf8')).toBe('pg-secret');
    expect(JSON.stringify(steps)).not.toContain('pg-secret');
    expect(warnings).toEqual([expect.stringContaining('no remote Elasticsearch/OpenSearch is configured')]);
  });

  it('uses an OpenSearch connection when one is configured', async () => {
    const home = liferayHome('opensearch', {
      'osgi/configs/com.liferay.portal.search.opensearch2.configuration.OpenSearchConfiguration.config': 'remoteClusterConnectionId="REMOTE"\n',
      'osgi/configs/com.liferay.portal.search.opensearch2.configuration.OpenSearchConnectionConfiguration-REMOTE.config': `authenticationEnabled=B"true"\nconnectionId="REMOTE"\nnetworkHostAddresses=["${search.url}"]\npassword="es p@ss"\nusername="elastic"\n`,
    });
    const steps = await expandRecipe({ name: 'liferay', path: home }, recipeTestContext().ctx, testOptions(secretsDir));
    expect(steps[1]!.command!.name).toBe('opensearch-snapshot');
  });

  it('adds a Documents and Media store configured outside Liferay Home', async () => {
    const store = path.join(base, 'dl-store');
    writeTree(store, { 'x/y.bin': 'y' });
    const home = liferayHome('store', {
      'osgi/configs/com.liferay.portal.store.file.system.configuration.AdvancedFileSystemStoreConfiguration.config': `rootDir="${store}"\n`,
    });
    const steps = await expandRecipe({ name: 'liferay', path: home }, recipeTestContext().ctx, testOptions(secretsDir));
    expect(steps.at(-1)!.files!.paths).toContain(store);
  });

  it('fails naming the file and line for a database it cannot dump or a broken config', async () => {
    const home = liferayHome('oracle');
    const ext = path.join(home, 'portal-ext.properties');
    writeFileSync(ext, 'a=1\n\njdbc.default.url=jdbc:oracle:thin:@db:1521:xe\n');
    let err = await failure(expandRecipe({ name: 'liferay', path: home }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${ext}:3: jdbc.default.url: the oracle database is not one this recipe can dump (MySQL/MariaDB or PostgreSQL)`);

    writeFileSync(ext, 'jdbc.default.jndi.name=jdbc/LiferayPool\n');
    err = await failure(expandRecipe({ name: 'liferay', path: home }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toMatch(new RegExp(`^${ext.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:1: the database is a JNDI data source`));

    writeFileSync(ext, 'jdbc.default.url=jdbc:mysql://db/lportal\njdbc.default.password=\\u00zz\n');
    err = await failure(expandRecipe({ name: 'liferay', path: home }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${ext}:2: malformed \\uXXXX escape "\\u00zz"`);

    writeFileSync(ext, 'jdbc.default.url=jdbc:mysql://db/lportal\n');
    const config = path.join(home, 'osgi/configs/com.liferay.portal.search.elasticsearch7.configuration.ElasticsearchConfiguration.config');
    writeFileSync(config, 'productionModeEnabled=B"true"\nnetworkHostAddresses=["http://es:9200"\n');
    err = await failure(expandRecipe({ name: 'liferay', path: home }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${config}:2: the list of networkHostAddresses is never closed with "]"`);

    err = await failure(expandRecipe({ name: 'liferay', path: path.join(base, 'not-liferay') }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.code).toBe('path_not_found');
  });

  it('warns that an embedded Hypersonic database is only in data/', async () => {
    const home = liferayHome('hsql', { 'portal-ext.properties': 'company.default.name=Test\n', 'portal-db.properties': '' });
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'liferay', path: home }, ctx, testOptions(secretsDir));
    expect(steps.map((s) => Object.keys(s)[0])).toEqual(['command', 'files']);
    expect(warnings[0]).toContain('embedded Hypersonic database');
  });
});

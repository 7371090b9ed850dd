import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startScratchMariadb, type ScratchMariadb } from '../agent/src/scratch/mariadb.js';
import { describeTree } from './tree.js';
import { backupNow, startFleet, tempDir, type Fleet, type JobLike, type TestServer } from './harness.js';

const ROOT_PASSWORD = 'maria-root-pw';
const APP_PASSWORD = 'civi-app-pw';

async function sql(db: ScratchMariadb, statements: string, database?: string): Promise<unknown[]> {
  const conn = await mysql.createConnection({ host: db.host, port: db.port, user: 'root', password: ROOT_PASSWORD, database, multipleStatements: true });
  try {
    const [rows] = await conn.query(statements);
    return rows as unknown[];
  } finally {
    await conn.end();
  }
}

async function rowCount(db: ScratchMariadb, database: string, table: string): Promise<number> {
  const rows = (await sql(db, `select count(*) as n from \`${table}\``, database)) as { n: number }[];
  return Number(rows[0]!.n);
}

describe('applications on MariaDB, by their recipes, moved to another agent', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let maria: ScratchMariadb;
  let server: TestServer;
  let fleet: Fleet;
  let rootPasswordFile: string;

  beforeAll(async () => {
    dir = await tempDir('apps');
    maria = await startScratchMariadb({ rootPassword: ROOT_PASSWORD });
    rootPasswordFile = join(dir.path, 'maria.pass');
    await writeFile(rootPasswordFile, ROOT_PASSWORD, { mode: 0o600 });
    fleet = await startFleet(dir.path, [{ name: 'web-1' }, { name: 'new-vm' }]);
    server = fleet.server;
  });

  afterAll(async () => {
    await fleet?.stop();
    await maria?.stop();
    await dir?.cleanup();
  });

  const backup = (plan: string): Promise<JobLike> => backupNow(server, plan);

  it('CiviCRM: the database from CIVICRM_DSN, then custom files, images, templates and the settings file', async () => {
    await sql(maria, `create database civicrm; create user 'civi'@'127.0.0.1' identified by '${APP_PASSWORD}'; grant all on civicrm.* to 'civi'@'127.0.0.1';
      use civicrm; create table civicrm_contact (id int primary key auto_increment, display_name varchar(128), photo blob);
      create table civicrm_activity (id int primary key auto_increment, subject text);
      insert into civicrm_contact (display_name, photo) select concat('Contact ', seq), unhex(md5(seq)) from seq_1_to_2500;
      insert into civicrm_activity (subject) select concat('Activity ', seq, ' – naïve') from seq_1_to_7000;`);
    const site = join(dir.path, 'drupal');
    const files = join(site, 'sites/default/files/civicrm');
    await mkdir(join(files, 'custom'), { recursive: true });
    await mkdir(join(files, 'persist/contribute/images'), { recursive: true });
    await mkdir(join(site, 'civicrm-templates/CRM'), { recursive: true });
    await writeFile(join(site, 'index.php'), '<?php // Drupal');
    await writeFile(join(site, 'sites/default/settings.php'), '<?php $databases = [];');
    await writeFile(join(files, 'custom/resume.pdf'), 'a resume');
    await writeFile(join(files, 'persist/contribute/images/premium.png'), 'an image');
    await writeFile(join(site, 'civicrm-templates/CRM/override.tpl'), '{* custom *}');
    await writeFile(join(site, 'sites/default/civicrm.settings.php'), `<?php
global $civicrm_setting;
if (!defined('CIVICRM_UF')) { define('CIVICRM_UF', 'Drupal'); }
if (!defined('CIVICRM_DSN')) {
  define( 'CIVICRM_DSN'         , 'mysql://civi:${APP_PASSWORD}@127.0.0.1:${maria.port}/civicrm?new_link=true');
}
$civicrm_setting['domain']['customTemplateDir'] = '${site}/civicrm-templates/';
define('CIVICRM_SITE_KEY', 'k');
`, { mode: 0o640 });

    expect((await server.api('POST', '/v1/plans', { plans: [{ id: 'civicrm', agent: 'web-1', recipe: { name: 'civicrm', path: site } }] })).status).toBe(200);
    const job = await backup('civicrm');
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    const snap = (await server.api<{ snapshot: { artifacts: { kind: string }[] } }>('GET', `/v1/snapshots/${job.snapshotId}`)).body.snapshot;
    expect(snap.artifacts.map((a) => a.kind)).toEqual(['mysql', 'files']);
    expect(JSON.stringify(snap)).not.toContain(APP_PASSWORD);

    const restoreDir = join(dir.path, 'civicrm-restored');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 'new-vm', '--to', restoreDir, '--to-mysql', `mysql://root@127.0.0.1:${maria.port}/civicrm_moved`, '--password-file', rootPasswordFile]);
    expect(res.code, res.stderr + res.stdout).toBe(0);
    expect(res.stdout).toMatch(/row counts match/);
    expect(await rowCount(maria, 'civicrm_moved', 'civicrm_contact')).toBe(2500);
    expect(await rowCount(maria, 'civicrm_moved', 'civicrm_activity')).toBe(7000);
    const restoredSite = join(restoreDir, site.slice(1));
    expect(await readFile(join(restoredSite, 'sites/default/civicrm.settings.php'), 'utf8')).toContain('CIVICRM_DSN');
    for (const part of ['sites/default/files/civicrm/custom', 'sites/default/files/civicrm/persist', 'civicrm-templates']) {
      expect(await describeTree(join(restoredSite, part)), part).toEqual(await describeTree(join(site, part)));
    }
  });

  it('Pydio Cells: the database from pydio.json, the working dir and the datasource parent; hosts rewritten on restore', async () => {
    await sql(maria, `create database cells; use cells; create table idm_user (uuid varchar(64) primary key, login varchar(128));
      insert into idm_user select uuid(), concat('user', seq) from seq_1_to_321;`);
    const root = join(dir.path, 'cells');
    const workingDir = join(root, 'var/cells');
    const dataParent = join(root, 'srv/cells-data');
    await mkdir(join(dataParent, '.minio.sys'), { recursive: true });
    await mkdir(join(dataParent, 'pydiods1/docs'), { recursive: true });
    await mkdir(workingDir, { recursive: true });
    await writeFile(join(dataParent, '.minio.sys/format.json'), '{"version":"1"}');
    await writeFile(join(dataParent, 'pydiods1/docs/report.odt'), 'a document');
    const config = {
      databases: { main: { driver: 'mysql', dsn: `root:${ROOT_PASSWORD}@tcp(127.0.0.1:${maria.port})/cells?parseTime=true` } },
      defaults: { database: { $ref: '#/databases/main' }, datasource: 'pydiods1', sites: [{ Binds: ['127.0.0.1:8080'], ReverseProxyURL: 'https://127.0.0.1:8080' }] },
      services: {
        'pydio.grpc.data.objects': { sources: ['local1'] },
        'pydio.grpc.data.objects.local1': { LocalFolder: dataParent, Name: 'local1', PeerAddress: '127.0.0.1', RunningPort: 33355 },
        'pydio.grpc.data.sync': { sources: ['pydiods1'] },
        'pydio.grpc.data.sync.pydiods1': { Name: 'pydiods1', ObjectsHost: '127.0.0.1', ObjectsPort: 33355, PeerAddress: '127.0.0.1', StorageConfiguration: { folder: `${dataParent}/pydiods1` }, StorageType: 'LOCAL' },
      },
      version: '4.4.3',
    };
    await writeFile(join(workingDir, 'pydio.json'), JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });

    expect((await server.api('POST', '/v1/plans', { plans: [{ id: 'cells', agent: 'web-1', recipe: { name: 'pydio-cells', path: workingDir } }] })).status).toBe(200);
    const job = await backup('cells');
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');

    const restoreDir = join(dir.path, 'cells-restored');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 'new-vm', '--to', restoreDir, '--to-mysql', `mysql://root@127.0.0.1:${maria.port}/cells_moved`, '--password-file', rootPasswordFile, '--rewrite-host', '127.0.0.1=10.20.30.40']);
    expect(res.code, res.stderr + res.stdout).toBe(0);
    expect(await rowCount(maria, 'cells_moved', 'idm_user')).toBe(321);
    const restoredConfig = await readFile(join(restoreDir, workingDir.slice(1), 'pydio.json'), 'utf8');
    expect(restoredConfig).not.toContain('127.0.0.1');
    expect(restoredConfig).toContain('10.20.30.40:8080');
    expect(restoredConfig).toContain(`tcp(10.20.30.40:${maria.port})`);
    expect(await describeTree(join(restoreDir, dataParent.slice(1)))).toEqual(await describeTree(dataParent));
  });

  it('Liferay DXP: the database from portal-ext.properties, then Liferay Home; no search engine means a clear skip', async () => {
    await sql(maria, `create database lportal; use lportal; create table User_ (userId bigint primary key, screenName varchar(75));
      insert into User_ select seq, concat('user', seq) from seq_1_to_150;`);
    const home = join(dir.path, 'liferay');
    for (const d of ['data/document_library/20097', 'osgi/configs', 'license', 'logs', 'tomcat-9.0.80/conf']) await mkdir(join(home, d), { recursive: true });
    await writeFile(join(home, 'portal-ext.properties'), `jdbc.default.driverClassName=org.mariadb.jdbc.Driver\njdbc.default.url=jdbc:mariadb://127.0.0.1:${maria.port}/lportal?useUnicode=true&characterEncoding=UTF-8\njdbc.default.username=root\njdbc.default.password=${ROOT_PASSWORD}\n`, { mode: 0o600 });
    await writeFile(join(home, 'portal-setup-wizard.properties'), 'setup.wizard.enabled=false\n');
    await writeFile(join(home, 'data/document_library/20097/file.bin'), 'a stored document');
    await writeFile(join(home, 'osgi/configs/com.liferay.portal.store.file.system.configuration.FileSystemStoreConfiguration.config'), 'rootDir="data/document_library"\n');
    await writeFile(join(home, 'license/activation-key.xml'), '<license/>');
    await writeFile(join(home, 'tomcat-9.0.80/conf/server.xml'), '<Server/>');

    expect((await server.api('POST', '/v1/plans', { plans: [{ id: 'liferay', agent: 'web-1', recipe: { name: 'liferay', path: home } }] })).status).toBe(200);
    const job = await backup('liferay');
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    expect(job.warnings.join('\n')).toMatch(/search|Elasticsearch|OpenSearch/i);

    const restoreDir = join(dir.path, 'liferay-restored');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 'new-vm', '--to', restoreDir, '--to-mysql', `mysql://root@127.0.0.1:${maria.port}/lportal_moved`, '--password-file', rootPasswordFile]);
    expect(res.code, res.stderr + res.stdout).toBe(0);
    expect(await rowCount(maria, 'lportal_moved', 'User_')).toBe(150);
    const restoredHome = join(restoreDir, home.slice(1));
    expect(await readFile(join(restoredHome, 'portal-ext.properties'), 'utf8')).toContain('jdbc.default.url');
    expect(await readFile(join(restoredHome, 'portal-setup-wizard.properties'), 'utf8')).toContain('setup.wizard');
    for (const part of ['data', 'osgi', 'license']) expect(await describeTree(join(restoredHome, part)), part).toEqual(await describeTree(join(home, part)));
  });

  it('a plain VM: listed databases first, then listed paths', async () => {
    await sql(maria, `create database crm; use crm; create table deals (id int primary key, v int); insert into deals select seq, seq * 3 from seq_1_to_99;`);
    const www = join(dir.path, 'www');
    await mkdir(join(www, 'html'), { recursive: true });
    await writeFile(join(www, 'html/index.html'), '<h1>hi</h1>');
    const plan = { id: 'vm', agent: 'web-1', recipe: { name: 'vm', paths: [www], databases: [{ mysql: { databases: ['crm'], host: '127.0.0.1', port: maria.port, user: 'root', passwordFile: rootPasswordFile } }] } };
    expect((await server.api('POST', '/v1/plans', { plans: [plan] })).status).toBe(200);
    const job = await backup('vm');
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    const restoreDir = join(dir.path, 'vm-restored');
    const res = await server.admin(['restore', job.snapshotId!, '--agent', 'new-vm', '--to', restoreDir, '--to-mysql', `mysql://root@127.0.0.1:${maria.port}/crm_moved`, '--password-file', rootPasswordFile]);
    expect(res.code, res.stderr + res.stdout).toBe(0);
    expect(await rowCount(maria, 'crm_moved', 'deals')).toBe(99);
    expect(await describeTree(join(restoreDir, www.slice(1)))).toEqual(await describeTree(www));
  });
});

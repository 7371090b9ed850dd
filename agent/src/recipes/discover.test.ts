import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePlanFile } from '@lifeboat/shared';
import { agentName, discoverApplications, discoverReport, expandGlob, renderDiscoverYaml, type DiscoverRoots } from './discover.js';
import { DEFAULT_RECIPE_SECRETS_DIR, secretKey } from './secrets.js';
import { writeTree } from './test-env.suite.js';

let base = '';
let roots: DiscoverRoots;

beforeAll(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'lifeboat-discover-'));
  const r = (p: string) => path.join(base, p);
  writeTree(base, {
    // Two CiviCRM sites under /var/www: Drupal and WordPress; a plain PHP site without CiviCRM.
    'var/www/example.org/htdocs/index.php': '<?php',
    'var/www/example.org/htdocs/sites/default/settings.php': '<?php',
    'var/www/example.org/htdocs/sites/default/civicrm.settings.php': "<?php\ndefine('CIVICRM_DSN', 'mysql://civi:secret@localhost/civicrm?new_link=true');\n",
    'var/www/example.org/htdocs/sites/default/files/civicrm/custom/': '',
    'var/www/wp.example.net/public_html/wp-content/uploads/civicrm/civicrm.settings.php': "<?php\ndefine('CIVICRM_DSN', 'mysql://wp:pw@localhost/wpcivi?new_link=true');\n",
    'var/www/plain/index.php': '<?php',
    // Chatwoot under /home/chatwoot/chatwoot.
    'home/chatwoot/chatwoot/.env': 'SECRET_KEY_BASE=x\nPOSTGRES_HOST=localhost\nPOSTGRES_PASSWORD=pg\n',
    'home/chatwoot/chatwoot/Procfile': 'web: rails s\n',
    'home/chatwoot/chatwoot/storage/': '',
    // Pydio Cells in a working dir named only by its systemd unit.
    'srv/cells-wd/pydio.json': JSON.stringify({ databases: { a: { driver: 'mysql', dsn: 'pydio:pw@tcp(localhost:3306)/cells' } }, defaults: { database: 'a' } }),
    'etc/systemd/system/cells.service': `[Service]\nUser=pydio\nEnvironment=CELLS_WORKING_DIR=${r('srv/cells-wd')}\nExecStart=/opt/pydio/bin/cells start\n`,
    // Liferay Home inside a bundle folder under /opt; its config is broken (an unsupported database).
    'opt/liferay-dxp-7.4/portal-ext.properties': 'jdbc.default.url=jdbc:sqlserver://db;databaseName=lportal\n',
    'opt/liferay-dxp-7.4/osgi/': '',
    'opt/liferay-dxp-7.4/data/': '',
    'opt/liferay-dxp-7.4/tomcat-9.0.80/conf/server.xml': '<Server/>',
  });
  roots = {
    civicrm: [r('var/www')],
    chatwoot: [r('home/chatwoot/chatwoot'), r('opt/chatwoot')],
    pydioCells: [r('root/.config/pydio/cells'), r('home/*/.config/pydio/cells')],
    systemdUnits: [r('etc/systemd/system')],
    liferay: [r('opt/liferay*'), r('opt/liferay*/*')],
  };
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('lifeboat-agent discover', () => {
  it('finds the applications in the usual places and says what each recipe would back up', async () => {
    const found = await discoverApplications(roots, { localMysqlSocket: () => undefined });
    expect(found.map((f) => [f.recipe, f.path])).toEqual([
      ['civicrm', path.join(base, 'var/www/example.org/htdocs/sites/default/civicrm.settings.php')],
      ['civicrm', path.join(base, 'var/www/wp.example.net/public_html/wp-content/uploads/civicrm/civicrm.settings.php')],
      ['chatwoot', path.join(base, 'home/chatwoot/chatwoot')],
      ['pydio-cells', path.join(base, 'srv/cells-wd')],
      ['liferay', path.join(base, 'opt/liferay-dxp-7.4')],
    ]);
    expect(found[0]!.steps).toEqual([
      'mysql: database civicrm on localhost:3306 as civi (password from the app config)',
      `files: ${path.join(base, 'var/www/example.org/htdocs/sites/default/files/civicrm/custom')}, ${path.join(base, 'var/www/example.org/htdocs/sites/default/civicrm.settings.php')}`,
    ]);
    expect(found[2]!.steps[0]).toBe('postgres: database chatwoot_production on localhost:5432 as postgres (password from the app config)');
    expect(found[4]!.problem).toContain('portal-ext.properties:1: jdbc.default.url: the sqlserver database is not one this recipe can dump');
    // Discovery reads files only: no password file was written.
    expect(existsSync(path.join(DEFAULT_RECIPE_SECRETS_DIR, `${secretKey('civicrm', found[0]!.path, 'db')}.secret`))).toBe(false);
  });

  it('prints a plan file that `lifeboat plan apply` accepts, leaving out what needs fixing', async () => {
    const report = discoverReport(await discoverApplications(roots, { localMysqlSocket: () => undefined }), 'web-1', 'from /etc/lifeboat/agent.json');
    const yaml = renderDiscoverYaml(report);
    // The server's own YAML parser and the shared plan schema, as `plan apply` uses them.
    const { parse } = createRequire(new URL('../../../server/package.json', import.meta.url))('yaml') as { parse: (text: string) => unknown };
    const parsed = parsePlanFile(parse(yaml));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.value.plans.map((p) => [p.id, p.agent, p.schedule, p.recipe?.name])).toEqual([
      ['civicrm-example.org', 'web-1', '0 3 * * *', 'civicrm'],
      ['civicrm-wp.example.net', 'web-1', '0 3 * * *', 'civicrm'],
      ['chatwoot', 'web-1', '0 3 * * *', 'chatwoot'],
      ['pydio-cells', 'web-1', '0 3 * * *', 'pydio-cells'],
    ]);
    expect(parsed.value.plans[3]!.recipe!.path).toBe(path.join(base, 'srv/cells-wd'));
    expect(yaml).toContain(`# liferay at ${path.join(base, 'opt/liferay-dxp-7.4')} (needs attention, not in the plans below)`);
    expect(yaml).toContain('#   problem: ');
    // Passwords found in configs are never printed.
    for (const secret of ['secret', ':pw@', 'POSTGRES_PASSWORD=pg']) expect(yaml).not.toContain(secret);
  });

  it('says it found nothing when nothing is there', async () => {
    const empty = path.join(base, 'empty');
    const none = await discoverApplications({ civicrm: [empty], chatwoot: [empty], pydioCells: [empty], systemdUnits: [empty], liferay: [empty] });
    expect(none).toEqual([]);
    expect(renderDiscoverYaml(discoverReport(none, 'web-1', 'x'))).toMatch(/^# lifeboat-agent discover found no CiviCRM, Chatwoot, Pydio Cells or Liferay installation/);
  });

  it('takes the agent name from its config, else the host name', async () => {
    expect(await agentName('/x/agent.json', async () => ({ name: 'web-7' }))).toEqual({ name: 'web-7', source: 'from /x/agent.json' });
    const fallback = await agentName('/x/agent.json', async () => {
      throw new Error('no config');
    });
    expect(fallback.name).toMatch(/^[a-z0-9_][a-z0-9_.-]*$/);
    expect(fallback.source).toContain('no readable agent config at /x/agent.json');
  });

  it('expands globs in path segments to existing directories', async () => {
    expect(await expandGlob(path.join(base, 'opt/liferay*'))).toEqual([path.join(base, 'opt/liferay-dxp-7.4')]);
    expect(await expandGlob(path.join(base, 'home/*/.config/pydio/cells'))).toEqual([]);
  });
});

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startScratchMariadb, type ScratchMariadb } from '../scratch/mariadb.js';
import { readCivicrmDirectorySettings, unserializePhpString } from './civicrm.js';
import { expandRecipe } from './index.js';
import { recipeTestContext, testOptions, writeTree } from './test-env.suite.js';

/** CiviCRM keeps directory settings saved through Administer » System Settings » Directories in civicrm_setting. */
const PASSWORD = "civi p@ss'w%rd";
let server: ScratchMariadb;
let base = '';

beforeAll(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'lifeboat-civicrm-db-'));
  server = await startScratchMariadb();
  const root = await mysql.createConnection({ socketPath: server.socket, user: 'root', multipleStatements: true });
  try {
    await root.query(`
      CREATE DATABASE civicrm;
      CREATE TABLE civicrm.civicrm_setting (
        id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
        name varchar(255) NOT NULL,
        value text,
        domain_id int unsigned NOT NULL,
        contact_id int unsigned DEFAULT NULL,
        is_domain tinyint NOT NULL DEFAULT 0
      );
      CREATE USER 'civi'@'%' IDENTIFIED BY ${root.escape(PASSWORD)};
      GRANT SELECT ON civicrm.* TO 'civi'@'%';`);
    await root.query('INSERT INTO civicrm.civicrm_setting (name, value, domain_id, contact_id, is_domain) VALUES ?', [
      [
        ['customFileUploadDir', 's:26:"[civicrm.files]/custom-db/";', 1, null, 1],
        ['imageUploadDir', 's:20:"/other/domain/images";', 2, null, 1],
        ['extensionsDir', 'N;', 1, null, 1],
        ['customTemplateDir', 's:10:"/a/contact";', 1, 5, 0],
      ],
    ]);
  } finally {
    await root.end();
  }
}, 120_000);

afterAll(async () => {
  await server?.stop();
  rmSync(base, { recursive: true, force: true });
});

describe('civicrm directory settings in the database', () => {
  it('reads this domain\'s directory settings with the credentials from CIVICRM_DSN', async () => {
    const settings = await readCivicrmDirectorySettings(
      { host: '127.0.0.1', port: server.port, user: 'civi', password: PASSWORD, database: 'civicrm' },
      ['customFileUploadDir', 'imageUploadDir', 'extensionsDir', 'customTemplateDir'],
      1,
    );
    // Domain 2's images and a contact's own setting are not this site's; "N;" is no value.
    expect(settings).toEqual(new Map([['customFileUploadDir', '[civicrm.files]/custom-db/']]));
  });

  it('the recipe backs up the directory the database names', async () => {
    const site = path.join(base, 'site');
    writeTree(site, {
      'sites/default/civicrm.settings.php': `<?php\ndefine('CIVICRM_DSN', 'mysql://civi:${encodeURIComponent(PASSWORD).replace(/'/g, "\\'")}@127.0.0.1:${server.port}/civicrm?new_link=true');\n`,
      'sites/default/files/civicrm/custom-db/photo.jpg': 'jpg',
      'sites/default/files/civicrm/custom/stale.txt': 'not this one',
    });
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'civicrm', path: site }, ctx, testOptions(path.join(base, 'secrets'), { civicrmDirectorySettings: readCivicrmDirectorySettings }));
    expect(steps[0]!.mysql).toMatchObject({ databases: ['civicrm'], host: '127.0.0.1', port: server.port, user: 'civi' });
    expect(steps[1]!.files!.paths).toEqual([path.join(site, 'sites/default/files/civicrm/custom-db'), path.join(site, 'sites/default/civicrm.settings.php')]);
    expect(warnings).toEqual([]);
  });

  it('a database that refuses the login leaves the defaults, with a warning', async () => {
    const site = path.join(base, 'wrong');
    writeTree(site, {
      'sites/default/civicrm.settings.php': `<?php\ndefine('CIVICRM_DSN', 'mysql://civi:wrong@127.0.0.1:${server.port}/civicrm?new_link=true');\n`,
      'sites/default/files/civicrm/custom/x.txt': 'x',
    });
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'civicrm', path: site }, ctx, testOptions(path.join(base, 'secrets'), { civicrmDirectorySettings: readCivicrmDirectorySettings }));
    expect(steps[1]!.files!.paths[0]).toBe(path.join(site, 'sites/default/files/civicrm/custom'));
    expect(warnings).toEqual([expect.stringMatching(/could not read the directory settings from the database .*Access denied/)]);
    expect(warnings[0]).not.toContain('wrong@');
  });

  it('reads PHP-serialized strings by their byte length', () => {
    expect(unserializePhpString('s:8:"München";')).toBe('München');
    expect(unserializePhpString('s:7:"München";')).toBeNull();
    expect(unserializePhpString('s:3:"abcd";')).toBeNull();
    expect(unserializePhpString('b:0;')).toBeNull();
  });
});

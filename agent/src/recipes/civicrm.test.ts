import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Step } from '@lifeboat/shared';
import { expandRecipe } from './index.js';
import { failure, recipeTestContext, testOptions, writeTree } from './test-env.suite.js';

let base = '';
let secretsDir = '';
beforeAll(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'lifeboat-civicrm-'));
  secretsDir = path.join(base, 'state/recipe-secrets');
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** The CiviCRM password as the database knows it, and as it is written (URL-encoded, PHP-escaped) in the DSN. */
const PASSWORD = "S3cr@t:p'w/d%";
const DSN_PASSWORD = "S3cr%40t%3Ap\\'w%2Fd%25";
const CMS_PASSWORD = 'drupal-db-secret';

/** civicrm.settings.php as the CiviCRM 5 installer writes it for Drupal 7 (trimmed), with a settings override. */
function drupalSettings(root: string): string {
  return `<?php
/**
 * CiviCRM Configuration File.
 */
global $civicrm_root, $civicrm_setting, $civicrm_paths;

if (!defined('CIVICRM_UF')) {
  if (getenv('CIVICRM_UF')) {
    define('CIVICRM_UF', getenv('CIVICRM_UF'));
  }
  else {
    define('CIVICRM_UF', 'Drupal');
  }
}

/**
 * Datasource (DSN) format:
 *      define( 'CIVICRM_UF_DSN', 'mysql://cms_db_username:cms_db_password@db_server/cms_database?new_link=true');
 */
if (!defined('CIVICRM_UF_DSN') && CIVICRM_UF !== 'UnitTests') {
  define( 'CIVICRM_UF_DSN'           , 'mysql://drupal:${CMS_PASSWORD}@db.internal:3307/drupal?new_link=true');
}

/**
 *      define( 'CIVICRM_DSN'         , 'mysql://civicrm:YOUR_PASSWORD@localhost/civicrm?new_link=true');
 */
if (!defined('CIVICRM_DSN')) {
  if (CIVICRM_UF === 'UnitTests' && isset($GLOBALS['_CV']['TEST_DB_DSN'])) {
    define('CIVICRM_DSN', $GLOBALS['_CV']['TEST_DB_DSN']);
  }
  else {
    define('CIVICRM_DSN', 'mysql://civi:${DSN_PASSWORD}@db.internal:3307/civicrm?new_link=true');
  }
}

if (!defined('CIVICRM_LOGGING_DSN')) {
  define('CIVICRM_LOGGING_DSN', CIVICRM_DSN);
}

global $civicrm_root;

$civicrm_root = '${root}/sites/all/modules/civicrm';
if (!defined('CIVICRM_TEMPLATE_COMPILEDIR')) {
  define( 'CIVICRM_TEMPLATE_COMPILEDIR', '${root}/sites/default/files/civicrm/templates_c/');
}

 // Override the custom files upload directory.
 // $civicrm_setting['domain']['customFileUploadDir'] = '/path/to/custom-dir';

 // Override the custom templates directory.
 $civicrm_setting['domain']['customTemplateDir'] = '${root}/civicrm-templates/';

if (!defined('CIVICRM_SITE_KEY')) {
  define( 'CIVICRM_SITE_KEY', 'a-site-key');
}

if (!defined('CIVICRM_DOMAIN_ID')) {
  define( 'CIVICRM_DOMAIN_ID', 1);
}
`;
}

function drupalSite(name: string, extra: Record<string, string> = {}): string {
  const root = path.join(base, name);
  writeTree(root, {
    'index.php': '<?php // Drupal',
    'sites/default/settings.php': '<?php $databases = [];',
    'sites/default/civicrm.settings.php': drupalSettings(root),
    'sites/default/files/civicrm/custom/resume.pdf': 'pdf',
    'sites/default/files/civicrm/persist/contribute/images/premium.png': 'png',
    'sites/default/files/civicrm/ext/org.example.ext/info.xml': '<extension/>',
    'sites/default/files/civicrm/templates_c/en_US/cache.php': 'cache',
    'sites/default/files/civicrm/upload/import.csv': 'tmp',
    'civicrm-templates/CRM/Contact/Page/View.tpl': '{* custom *}',
    ...extra,
  });
  return root;
}

describe('civicrm recipe', () => {
  it('expands a Drupal site into its databases, then its directories and settings file', async () => {
    const root = drupalSite('drupal7');
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'civicrm', path: root }, ctx, testOptions(secretsDir));

    expect(steps.map((s) => Object.keys(s)[0])).toEqual(['mysql', 'mysql', 'files']);
    const [civi, cms, files] = steps;
    expect(civi!.mysql).toMatchObject({ databases: ['civicrm'], host: 'db.internal', port: 3307, user: 'civi' });
    expect(cms!.mysql).toMatchObject({ databases: ['drupal'], host: 'db.internal', port: 3307, user: 'drupal' });
    const civiFiles = path.join(root, 'sites/default/files/civicrm');
    expect(files!.files!.paths).toEqual([
      path.join(civiFiles, 'custom'),
      path.join(civiFiles, 'persist'),
      path.join(root, 'civicrm-templates'),
      path.join(civiFiles, 'ext'),
      path.join(root, 'sites/default/civicrm.settings.php'),
    ]);
    // Every step is a valid plan step, and no password is in any of them.
    for (const step of steps) expect(Step.safeParse(step).success).toBe(true);
    const json = JSON.stringify(steps);
    for (const secret of [PASSWORD, CMS_PASSWORD, 'S3cr%40t', 'S3cr@t']) expect(json).not.toContain(secret);
    // The passwords are in 0600 files the steps name, decoded as the database expects them.
    expect(readFileSync(civi!.mysql!.passwordFile!, 'utf8')).toBe(PASSWORD);
    expect(readFileSync(cms!.mysql!.passwordFile!, 'utf8')).toBe(CMS_PASSWORD);
    expect(statSync(civi!.mysql!.passwordFile!).mode & 0o777).toBe(0o600);
    expect(statSync(secretsDir).mode & 0o777).toBe(0o700);
    expect(warnings).toEqual([]);
  });

  it('takes the settings file itself as the path, and the plan\'s passwordFile over the one found', async () => {
    const root = drupalSite('drupal-file');
    const settings = path.join(root, 'sites/default/civicrm.settings.php');
    const { ctx } = recipeTestContext();
    const steps = await expandRecipe({ name: 'civicrm', path: settings, passwordFile: '/etc/lifeboat/civi.pass', exclude: ['**/*.tmp'], paths: ['/etc/hosts'] }, ctx, testOptions(secretsDir));
    expect(steps[0]!.mysql!.passwordFile).toBe('/etc/lifeboat/civi.pass');
    expect(steps.at(-1)!.files!.exclude).toEqual(['**/*.tmp']);
    expect(steps.at(-1)!.files!.paths).toContain('/etc/hosts');
  });

  it('finds a WordPress site\'s settings file in wp-content/uploads/civicrm and reads double-quoted defines', async () => {
    const root = path.join(base, 'wordpress');
    const uploads = path.join(root, 'wp-content/uploads/civicrm');
    writeTree(root, {
      'wp-config.php': '<?php',
      'wp-content/uploads/civicrm/civicrm.settings.php': `<?php
define( "CIVICRM_UF" , "WordPress" );
define( "CIVICRM_DSN" , "mysql://wpcivi:wp%20pass@localhost/wp_civicrm?new_link=true" );
define( 'CIVICRM_UF_DSN', 'mysql://wpcivi:wp%20pass@localhost/wp_civicrm?new_link=true');
`,
      'wp-content/uploads/civicrm/custom/photo.jpg': 'jpg',
      'wp-content/uploads/civicrm/persist/contribute/x.png': 'png',
    });
    const { ctx, warnings, logs } = recipeTestContext();
    const steps = await expandRecipe({ name: 'civicrm', path: root }, ctx, testOptions(secretsDir));
    // The CMS DSN names the same database: dumped once.
    expect(steps.map((s) => Object.keys(s)[0])).toEqual(['mysql', 'files']);
    expect(steps[0]!.mysql).toMatchObject({ databases: ['wp_civicrm'], host: 'localhost', port: 3306, user: 'wpcivi' });
    expect(readFileSync(steps[0]!.mysql!.passwordFile!, 'utf8')).toBe('wp pass');
    expect(steps[1]!.files!.paths).toEqual([path.join(uploads, 'custom'), path.join(uploads, 'persist'), path.join(uploads, 'civicrm.settings.php')]);
    // Missing default directories are skipped with a note, not a warning.
    expect(warnings).toEqual([]);
    expect(logs.some((l) => l.includes('ext') && l.includes('does not exist yet'))).toBe(true);

    // PHP's mysqli connects to "localhost" through the local socket: so does the dump, when there is one.
    const viaSocket = await expandRecipe({ name: 'civicrm', path: root }, recipeTestContext().ctx, testOptions(secretsDir, { localMysqlSocket: () => '/run/mysqld/mysqld.sock' }));
    expect(viaSocket[0]!.mysql).toMatchObject({ databases: ['wp_civicrm'], host: '/run/mysqld/mysqld.sock', user: 'wpcivi' });
  });

  it('uses directory settings saved in the database, and warns about a configured directory that is missing', async () => {
    const root = drupalSite('drupal-db-settings', { 'srv/civi-custom/doc.odt': 'odt' });
    rmSync(path.join(root, 'civicrm-templates'), { recursive: true });
    const asked: unknown[] = [];
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe(
      { name: 'civicrm', path: root },
      ctx,
      testOptions(secretsDir, {
        civicrmDirectorySettings: async (db, names, domain) => {
          asked.push({ db, names, domain });
          return new Map([['customFileUploadDir', `${root}/srv/civi-custom/`]]);
        },
      }),
    );
    expect(asked).toEqual([
      {
        db: { host: 'db.internal', port: 3307, user: 'civi', password: PASSWORD, database: 'civicrm' },
        names: ['customFileUploadDir', 'imageUploadDir', 'customPHPPathDir', 'extensionsDir'],
        domain: 1,
      },
    ]);
    expect(steps.at(-1)!.files!.paths[0]).toBe(path.join(root, 'srv/civi-custom'));
    expect(warnings).toEqual([expect.stringMatching(/custom templates directory .*civicrm-templates .*does not exist; skipped/)]);
  });

  it('a computed CIVICRM_DSN fails naming the file and the line', async () => {
    const root = path.join(base, 'computed');
    writeTree(root, {
      'sites/default/civicrm.settings.php': `<?php\n\ndefine('CIVICRM_DSN', getenv('CIVICRM_DSN'));\n`,
    });
    const err = await failure(expandRecipe({ name: 'civicrm', path: root }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toContain(`${path.join(root, 'sites/default/civicrm.settings.php')}:3: CIVICRM_DSN is computed here`);
  });

  it('an unparseable settings file or DSN fails naming the file and the line', async () => {
    const root = path.join(base, 'broken');
    const file = path.join(root, 'sites/default/civicrm.settings.php');
    writeTree(root, { 'sites/default/civicrm.settings.php': `<?php\n// ok\ndefine('CIVICRM_DSN', 'mysql://u:p@h/civicrm);\n` });
    let err = await failure(expandRecipe({ name: 'civicrm', path: root }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${file}:3: cannot read the PHP: a quoted string is never closed`);

    writeFileSync(file, `<?php\n\n\ndefine('CIVICRM_DSN', 'pgsql://u:p@h/civicrm');\n`);
    err = await failure(expandRecipe({ name: 'civicrm', path: root }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${file}:4: CIVICRM_DSN uses "pgsql://", not a MySQL/MariaDB database`);

    writeFileSync(file, `<?php\ndefine('CIVICRM_UF', 'Drupal');\n`);
    err = await failure(expandRecipe({ name: 'civicrm', path: root }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toContain(`${file}: no define('CIVICRM_DSN'`);
  });

  it('a site root without a settings file fails naming where it looked', async () => {
    const root = path.join(base, 'empty-site');
    writeTree(root, { 'index.php': '<?php' });
    const err = await failure(expandRecipe({ name: 'civicrm', path: root }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.code).toBe('path_not_found');
    expect(err.message).toContain(`no civicrm.settings.php under ${root}`);
    const missing = await failure(expandRecipe({ name: 'civicrm', path: path.join(base, 'nothing-here') }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(missing.code).toBe('path_not_found');
  });

  it('asks which site of a Drupal multisite to back up', async () => {
    const root = drupalSite('multisite', {
      'sites/example.org/civicrm.settings.php': `<?php define('CIVICRM_DSN', 'mysql://a:b@localhost/other?new_link=true');`,
    });
    const err = await failure(expandRecipe({ name: 'civicrm', path: root }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toContain('several sites');
    expect(err.details).toEqual([path.join(root, 'sites/default/civicrm.settings.php'), path.join(root, 'sites/example.org/civicrm.settings.php')]);
  });
});

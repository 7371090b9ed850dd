import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Recipe } from '@lifeboat/shared';
import { afterRestore, expandRecipe } from './index.js';
import { fileSecretStore, secretKey } from './secrets.js';
import { recipeTestContext, testOptions } from './test-env.suite.js';

let base = '';
beforeAll(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'lifeboat-vm-'));
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('vm recipe', () => {
  it('dumps the listed databases first, then archives the listed paths', async () => {
    const recipe = Recipe.parse({
      name: 'vm',
      paths: ['/var/www', '/etc/nginx', '/var/www/html'],
      exclude: ['**/cache/**'],
      passwordFile: '/etc/lifeboat/db.pass',
      databases: [
        { mysql: { databases: ['shop'], user: 'backup' } },
        { postgres: { database: 'app', passwordEnv: 'PGPW' } },
        { sqlite: { path: '/srv/app/app.db' } },
      ],
    });
    const steps = await expandRecipe(recipe, recipeTestContext().ctx, testOptions(path.join(base, 'secrets')));
    expect(steps).toEqual([
      { mysql: { databases: ['shop'], host: '127.0.0.1', port: 3306, user: 'backup', passwordFile: '/etc/lifeboat/db.pass' } },
      // Its own password source stays; the recipe's passwordFile is only for databases without one.
      { postgres: { database: 'app', host: '127.0.0.1', port: 5432, user: 'postgres', passwordEnv: 'PGPW', globals: false } },
      { sqlite: { path: '/srv/app/app.db' } },
      { files: { paths: ['/var/www', '/etc/nginx'], exclude: ['**/cache/**'] } },
    ]);
  });

  it('a vm with only paths is one files step; other recipes have nothing to do after a restore', async () => {
    const steps = await expandRecipe(Recipe.parse({ name: 'vm', paths: ['/srv'] }), recipeTestContext().ctx, testOptions(path.join(base, 'secrets')));
    expect(steps).toEqual([{ files: { paths: ['/srv'], exclude: [] } }]);
    const { ctx, warnings } = recipeTestContext();
    expect(await afterRestore('vm', base, { rewriteHosts: [] }, ctx)).toEqual([]);
    expect(await afterRestore('chatwoot', base, { rewriteHosts: [{ from: 'a', to: 'b' }] }, ctx)).toEqual([expect.stringContaining('--rewrite-host applies to pydio-cells restores')]);
    expect(warnings).toHaveLength(1);
  });
});

describe('recipe secret store', () => {
  it('keeps one 0600 file per key in a 0700 directory, rewrites it when the secret changes, and removes it', async () => {
    const dir = path.join(base, 'store');
    const store = fileSecretStore(dir);
    const key = secretKey('chatwoot', '/home/chatwoot/chatwoot', 'db');
    expect(key).toMatch(/^chatwoot-db-[0-9a-f]{16}$/);
    expect(secretKey('chatwoot', '/opt/chatwoot', 'db')).not.toBe(key);
    const file = await store.put(key, 'first');
    expect(file).toBe(path.join(dir, `${key}.secret`));
    expect(readFileSync(file, 'utf8')).toBe('first');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(await store.put(key, 'second')).toBe(file);
    expect(readFileSync(file, 'utf8')).toBe('second');
    await store.remove(key);
    expect(existsSync(file)).toBe(false);
    await store.remove(key);
  });
});

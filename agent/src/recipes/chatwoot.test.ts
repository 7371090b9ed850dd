import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expandRecipe } from './index.js';
import { failure, recipeTestContext, testOptions, writeTree } from './test-env.suite.js';

let base = '';
let secretsDir = '';
beforeAll(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'lifeboat-chatwoot-'));
  secretsDir = path.join(base, 'state/recipe-secrets');
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** A Chatwoot source install as cwctl lays it out: the app in /home/chatwoot/chatwoot with .env and storage/. */
function install(name: string, env: string, extra: Record<string, string> = {}): string {
  const dir = path.join(base, name, 'home/chatwoot/chatwoot');
  writeTree(dir, {
    '.env': env,
    'Procfile': 'web: bundle exec rails s\n',
    'config/database.yml': "default: &default\n  adapter: postgresql\n  host: <%= ENV.fetch('POSTGRES_HOST', 'localhost') %>\n",
    'storage/ab/cd/abcd1234': 'an uploaded file',
    ...extra,
  });
  return dir;
}

describe('chatwoot recipe', () => {
  it('reads POSTGRES_* from .env: the database first, then storage/ and the .env', async () => {
    const password = 'pg p@ss#word';
    const dir = install(
      'fields',
      `# Used to verify the integrity of signed cookies
SECRET_KEY_BASE=replace_with_lengthy_secure_hex
FRONTEND_URL=https://chat.example.org
POSTGRES_HOST=127.0.0.1
POSTGRES_USERNAME=chatwoot
POSTGRES_PASSWORD='${password}'
POSTGRES_PORT=5433
RAILS_ENV=production
ACTIVE_STORAGE_SERVICE=local
`,
    );
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'chatwoot', path: dir }, ctx, testOptions(secretsDir));
    expect(steps.map((s) => Object.keys(s)[0])).toEqual(['postgres', 'files']);
    expect(steps[0]!.postgres).toMatchObject({ database: 'chatwoot_production', host: '127.0.0.1', port: 5433, user: 'chatwoot', globals: false });
    expect(readFileSync(steps[0]!.postgres!.passwordFile!, 'utf8')).toBe(password);
    expect(steps[1]!.files!.paths).toEqual([path.join(dir, 'storage'), path.join(dir, '.env')]);
    expect(JSON.stringify(steps)).not.toContain(password);
    expect(warnings).toEqual([]);
  });

  it('prefers DATABASE_URL (URL-encoded password), with the defaults for what it leaves out', async () => {
    const dir = install('url', 'SECRET_KEY_BASE=x\nDATABASE_URL=postgres://cw:s%3Acret%40x@db.example.org/cw_prod\nPOSTGRES_HOST=ignored\n');
    const steps = await expandRecipe({ name: 'chatwoot', path: dir }, recipeTestContext().ctx, testOptions(secretsDir));
    expect(steps[0]!.postgres).toMatchObject({ database: 'cw_prod', host: 'db.example.org', port: 5432, user: 'cw' });
    expect(readFileSync(steps[0]!.postgres!.passwordFile!, 'utf8')).toBe('s:cret@x');
    expect(JSON.stringify(steps)).not.toContain('s:cret@x');
    expect(JSON.stringify(steps)).not.toContain('s%3Acret');
  });

  it("uses Chatwoot's defaults when .env names no database, and drops a stale password file", async () => {
    const dir = install('defaults', 'SECRET_KEY_BASE=x\nPOSTGRES_PASSWORD=first\n');
    const first = await expandRecipe({ name: 'chatwoot', path: dir }, recipeTestContext().ctx, testOptions(secretsDir));
    const stored = first[0]!.postgres!.passwordFile!;
    expect(existsSync(stored)).toBe(true);
    writeFileSync(path.join(dir, '.env'), 'SECRET_KEY_BASE=x\n');
    const steps = await expandRecipe({ name: 'chatwoot', path: dir }, recipeTestContext().ctx, testOptions(secretsDir));
    expect(steps[0]!.postgres).toEqual({ database: 'chatwoot_production', host: 'localhost', port: 5432, user: 'postgres', globals: false });
    // The password left the config: its copy is gone too.
    expect(existsSync(stored)).toBe(false);
  });

  it('leaves storage/ out with a warning when uploads go to a cloud provider', async () => {
    const dir = install('s3', 'SECRET_KEY_BASE=x\nACTIVE_STORAGE_SERVICE=amazon\nS3_BUCKET_NAME=uploads\n');
    const { ctx, warnings } = recipeTestContext();
    const steps = await expandRecipe({ name: 'chatwoot', path: dir }, ctx, testOptions(secretsDir));
    expect(steps[1]!.files!.paths).toEqual([path.join(dir, '.env')]);
    expect(warnings).toEqual([expect.stringContaining('stores uploads in "amazon"')]);
  });

  it('warns about a database host this machine cannot resolve (a Docker service name)', async () => {
    const dir = install('docker', 'SECRET_KEY_BASE=x\nPOSTGRES_HOST=postgres.unresolvable\n');
    const { ctx, warnings } = recipeTestContext();
    await expandRecipe({ name: 'chatwoot', path: dir }, ctx, testOptions(secretsDir));
    expect(warnings).toEqual([expect.stringContaining('"postgres.unresolvable", which does not resolve on this machine')]);
  });

  it('a missing or unparseable .env fails naming the file and the line', async () => {
    const dir = install('broken', 'SECRET_KEY_BASE=x\nPOSTGRES_PORT=54x32\n');
    let err = await failure(expandRecipe({ name: 'chatwoot', path: dir }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${path.join(dir, '.env')}:2: POSTGRES_PORT "54x32" is not a port number`);

    writeFileSync(path.join(dir, '.env'), 'SECRET_KEY_BASE=x\nFRONTEND_URL=https://x\nthis line is wrong\n');
    err = await failure(expandRecipe({ name: 'chatwoot', path: dir }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toBe(`${path.join(dir, '.env')}:3: expected KEY=value, found "this line is wrong"`);

    writeFileSync(path.join(dir, '.env'), 'DATABASE_URL=mysql2://u:p@h/db\n');
    err = await failure(expandRecipe({ name: 'chatwoot', path: dir }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.message).toContain(`${path.join(dir, '.env')}:1: DATABASE_URL uses "mysql2://"`);

    rmSync(path.join(dir, '.env'));
    err = await failure(expandRecipe({ name: 'chatwoot', path: dir }, recipeTestContext().ctx, testOptions(secretsDir)));
    expect(err.code).toBe('path_not_found');
    expect(err.message).toBe(`Chatwoot's .env not found: ${path.join(dir, '.env')}`);
  });
});

import { execFile } from 'node:child_process';
import { access, readdir } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';
import type { ToolInfo } from '@lifeboat/shared';

/** The dump tools the hello reports, looked for on PATH and in PostgreSQL's versioned install directories. */
const TOOLS = ['pg_dump', 'pg_restore', 'mariadb-dump', 'mysqldump', 'mariadb', 'sqlite3', 'tar'];

/** Whether a file exists and this process may execute it. */
export async function executable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function candidates(name: string): Promise<string[]> {
  const dirs = (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').filter(Boolean);
  if (name.startsWith('pg_')) {
    const versions = await readdir('/usr/lib/postgresql').catch(() => [] as string[]);
    // Newest major first: a newer pg_dump can dump an older server, never the reverse.
    for (const v of versions.sort((a, b) => Number(b) - Number(a))) dirs.unshift(join('/usr/lib/postgresql', v, 'bin'));
  }
  return dirs.map((d) => join(d, name));
}

function versionOf(path: string): Promise<string> {
  return new Promise((resolve) => {
    execFile(path, ['--version'], { timeout: 5000 }, (err, stdout) => {
      const line = (stdout || '').split('\n')[0]?.trim() ?? '';
      resolve(err && !line ? 'unknown' : line.replace(/^.*?\b(\d+(\.\d+)+)\b.*$/, '$1') || line);
    });
  });
}

export async function detectTools(): Promise<ToolInfo[]> {
  const found: ToolInfo[] = [];
  for (const name of TOOLS) {
    for (const path of await candidates(name)) {
      if (await executable(path)) {
        found.push({ name, version: await versionOf(path), path });
        break;
      }
    }
  }
  return found;
}

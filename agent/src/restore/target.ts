import { mkdir, opendir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { LifeboatError, type DirTarget } from '@lifeboat/shared';
import { fsReason, isCode } from '../fs-errors.js';

/**
 * The directory a restore writes into, made ready before any byte is written: an absolute path, created
 * (0700) when missing, refused when it is not a directory or, unless forced, not empty.
 */

export interface PreparedTarget {
  /** The target's real path: what node-tar extracts into and what every containment check compares with. */
  root: string;
  /** Made by prepareTarget, 0700: the caller opens it up once it is filled (see restoreFiles in sources/files.ts). */
  created: boolean;
}

export async function prepareTarget(target: DirTarget): Promise<PreparedTarget> {
  const dir = target.path;
  if (!path.posix.isAbsolute(dir)) throw new LifeboatError('restore_refused', `restore target ${dir} is not an absolute path`);
  const existing = await stat(dir).catch((err: unknown) => {
    if (isCode(err, 'ENOENT')) return null;
    throw new LifeboatError('restore_failed', `cannot use restore target ${dir}: ${fsReason(err)}`);
  });
  if (existing === null) {
    try {
      await mkdir(path.posix.dirname(dir), { recursive: true, mode: 0o755 });
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      throw new LifeboatError('restore_failed', `cannot create restore target ${dir}: ${fsReason(err)}`);
    }
    return { root: await realpath(dir), created: true };
  }
  if (!existing.isDirectory()) throw new LifeboatError('restore_refused', `restore target ${dir} exists and is not a directory`);
  if (!target.force && !(await isEmptyDirectory(dir))) {
    throw new LifeboatError('restore_refused', `restore target ${dir} is not empty; pass --force to restore into it anyway`);
  }
  return { root: await realpath(dir), created: false };
}

async function isEmptyDirectory(dir: string): Promise<boolean> {
  const handle = await opendir(dir);
  try {
    return (await handle.read()) === null;
  } finally {
    await handle.close();
  }
}

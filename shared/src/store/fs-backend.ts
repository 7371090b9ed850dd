import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { LifeboatError } from '../errors.js';
import type { StoreBackend } from './backend.js';

const TEMP_PREFIX = '.tmp-';

/**
 * The default store: one file per object under a directory.
 * Writes follow DESIGN §11: temp file, fsync, rename, fsync the directory — so a crash leaves either the
 * whole object or none under its name, and a failed fsync fails the write.
 */
export class FsBackend implements StoreBackend {
  /** Directories known to exist: a put into one skips its mkdir (a round trip per chunk otherwise). */
  private readonly madeDirs = new Set<string>();

  constructor(readonly root: string) {}

  private pathOf(key: string): string {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_./-]*$/.test(key) || key.split('/').some((p) => p === '..' || p === '.' || p === '')) {
      throw new LifeboatError('bad_request', `invalid store key "${key}"`);
    }
    return join(this.root, key);
  }

  async has(key: string): Promise<boolean> {
    try {
      await stat(this.pathOf(key));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  async put(key: string, bytes: Buffer | readonly Buffer[]): Promise<void> {
    const path = this.pathOf(key);
    const dir = dirname(path);
    const temp = join(dir, `${TEMP_PREFIX}${randomBytes(6).toString('hex')}`);
    const openTemp = () => open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
    try {
      if (!this.madeDirs.has(dir)) await this.makeDir(dir);
      const handle = await openTemp().catch(async (err: NodeJS.ErrnoException) => {
        // Removed since (an emptied shard): make it again.
        if (err.code !== 'ENOENT') throw err;
        await this.makeDir(dir);
        return openTemp();
      });
      try {
        if (Buffer.isBuffer(bytes)) await handle.writeFile(bytes);
        else await writeAll(handle, bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, path);
      await syncDir(dir);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new LifeboatError('store_full', `store full: no space left on the store's disk (${this.root})`);
      }
      throw new LifeboatError('store_failed', `writing ${key} to the store failed: ${(err as Error).message}`);
    }
  }

  private async makeDir(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    this.madeDirs.add(dir);
  }

  async get(key: string): Promise<Buffer> {
    try {
      return await readFile(this.pathOf(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new LifeboatError('not_found', `the store has no object ${key}`);
      throw err;
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    let handle;
    try {
      handle = await open(this.pathOf(key), constants.O_RDONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new LifeboatError('not_found', `the store has no object ${key}`);
      throw err;
    }
    try {
      const out = Buffer.allocUnsafe(length);
      let filled = 0;
      while (filled < length) {
        const { bytesRead } = await handle.read(out, filled, length - filled, offset + filled);
        if (bytesRead === 0) throw new LifeboatError('integrity', `${key} ends at ${offset + filled}, before bytes ${offset}–${offset + length} (truncated)`);
        filled += bytesRead;
      }
      return out;
    } finally {
      await handle.close();
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }

  async *list(prefix: string): AsyncIterable<string> {
    const start = join(this.root, prefix);
    yield* walk(this.root, start);
  }
}

async function* walk(root: string, dir: string): AsyncIterable<string> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const entry of entries) {
    if (entry.name.startsWith(TEMP_PREFIX)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(root, path);
    else if (entry.isFile()) yield relative(root, path).split(sep).join('/');
  }
}

/** writev until every part is written: a nearly full disk takes part of a write, and the next one fails with ENOSPC. */
async function writeAll(handle: FileHandle, parts: readonly Buffer[]): Promise<void> {
  let rest = [...parts];
  while (rest.length > 0) {
    let { bytesWritten } = await handle.writev(rest);
    while (rest.length > 0 && bytesWritten >= rest[0]!.length) bytesWritten -= rest.shift()!.length;
    if (bytesWritten > 0) rest[0] = rest[0]!.subarray(bytesWritten);
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

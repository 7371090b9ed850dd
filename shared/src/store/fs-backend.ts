import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { LifeboatError } from '../errors.js';
import { AlignedScratch, alignedLength, alignedRoom, DIRECT_IO_ALIGNMENT } from './aligned.js';
import type { StoreBackend } from './backend.js';

const TEMP_PREFIX = '.tmp-';
/** Objects from this size are written past the page cache, when their buffer allows it (aligned.ts). */
const DIRECT_IO_MIN_BYTES = 256 * 1024;
/**
 * Direct reads at once (the server reads a few chunks ahead for a restore; one more does not wait, it reads
 * buffered), and the largest range read directly: most stored chunks are under 2 MiB, and the scratch buffers
 * stay resident, so they are kept small (8 MiB in all) and a larger chunk is read buffered.
 */
const DIRECT_READS_AT_ONCE = 4;
const DIRECT_READ_MAX_BYTES = 2 * 1024 * 1024;

/**
 * The default store: one file per object under a directory.
 * Writes follow DESIGN §11: temp file, fsync, rename, fsync the directory — so a crash leaves either the
 * whole object or none under its name, and a failed fsync fails the write.
 */
export class FsBackend implements StoreBackend {
  /** Directories known to exist: a put into one skips its mkdir (a round trip per chunk otherwise). */
  private readonly madeDirs = new Set<string>();
  /** Whether large aligned objects are written with O_DIRECT: until the file system first refuses it. */
  private directWrites = true;
  /** The same for reads of large ranges (a chunk of a pack), through a few reused aligned buffers. */
  private directReads = true;
  private readonly scratch = new AlignedScratch(DIRECT_READS_AT_ONCE, alignedLength(DIRECT_READ_MAX_BYTES) + DIRECT_IO_ALIGNMENT);

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
    try {
      if (!this.madeDirs.has(dir)) await this.makeDir(dir);
      const direct = this.directWrites && Buffer.isBuffer(bytes) && bytes.length >= DIRECT_IO_MIN_BYTES && alignedRoom(bytes) >= alignedLength(bytes.length);
      if (!(direct && (await this.writeDirect(temp, bytes)))) await this.writeBuffered(temp, bytes);
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

  /** Creates the temp file; makes its directory again when it was removed since (an emptied shard). */
  private async openTemp(temp: string, flags = 0): Promise<FileHandle> {
    const openIt = () => open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | flags, 0o600);
    return openIt().catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      await this.makeDir(temp.slice(0, temp.lastIndexOf('/')));
      return openIt();
    });
  }

  private async writeBuffered(temp: string, bytes: Buffer | readonly Buffer[]): Promise<void> {
    const handle = await this.openTemp(temp);
    try {
      if (Buffer.isBuffer(bytes)) await handle.writeFile(bytes);
      else await writeAll(handle, bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  /**
   * Writes an object past the page cache (aligned.ts says why): whole aligned blocks, the last one padded with
   * zeros in the buffer's own room, then cut to size. False, with nothing left behind, where the file system or
   * the device refuses direct I/O (EINVAL): the object is then written buffered, as every later one.
   */
  private async writeDirect(temp: string, bytes: Buffer): Promise<boolean> {
    let handle: FileHandle;
    try {
      handle = await this.openTemp(temp, constants.O_DIRECT);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      this.directWrites = false;
      return false;
    }
    let written = false;
    try {
      const blocks = Buffer.from(bytes.buffer, bytes.byteOffset, alignedLength(bytes.length)).fill(0, bytes.length);
      try {
        for (let at = 0; at < blocks.length; ) at += (await handle.write(blocks, at, blocks.length - at, at)).bytesWritten;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        this.directWrites = false;
        return false;
      }
      await handle.truncate(bytes.length);
      await handle.sync();
      written = true;
      return true;
    } finally {
      await handle.close();
      if (!written) await unlink(temp).catch(() => undefined);
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
    if (this.directReads && length >= DIRECT_IO_MIN_BYTES && length <= DIRECT_READ_MAX_BYTES) {
      const read = await this.getRangeDirect(key, offset, length);
      if (read) return read;
    }
    const handle = await this.openObject(key);
    try {
      const out = Buffer.allocUnsafe(length);
      const filled = await readFully(handle, out, 0, length, offset);
      if (filled < length) throw truncated(key, offset, length, offset + filled);
      return out;
    } finally {
      await handle.close();
    }
  }

  /**
   * getRange past the page cache (aligned.ts): the aligned blocks around the range are read into a lent scratch
   * buffer and the range copied out. Null when no scratch buffer is free, or where the file system refuses direct
   * I/O (EINVAL: every later read is then buffered).
   */
  private async getRangeDirect(key: string, offset: number, length: number): Promise<Buffer | null> {
    const start = offset - (offset % DIRECT_IO_ALIGNMENT);
    const span = alignedLength(offset + length - start);
    const scratch = this.scratch.lend();
    if (!scratch) return null;
    try {
      const handle = await this.openObject(key, constants.O_DIRECT);
      try {
        // A direct read is short only at the end of the file, so the blocks are read whole until then.
        const filled = await readFully(handle, scratch, 0, span, start);
        if (filled < offset + length - start) throw truncated(key, offset, length, start + filled);
        return Buffer.from(scratch.subarray(offset - start, offset - start + length));
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      this.directReads = false;
      return null;
    } finally {
      this.scratch.giveBack(scratch);
    }
  }

  private async openObject(key: string, flags = 0): Promise<FileHandle> {
    try {
      return await open(this.pathOf(key), constants.O_RDONLY | flags);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new LifeboatError('not_found', `the store has no object ${key}`);
      throw err;
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

/** Reads until `length` bytes are in or the file ends; returns how many were read. */
async function readFully(handle: FileHandle, into: Buffer, at: number, length: number, position: number): Promise<number> {
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(into, at + filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

function truncated(key: string, offset: number, length: number, end: number): LifeboatError {
  return new LifeboatError('integrity', `${key} ends at ${end}, before bytes ${offset}–${offset + length} (truncated)`);
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

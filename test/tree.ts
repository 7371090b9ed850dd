import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** A tree with what backups get wrong: links, odd names, empty dirs, modes, mtimes, one large file. */
export async function generateTree(root: string, options: { bigFileBytes: number }): Promise<void> {
  await mkdir(join(root, 'a/b/c'), { recursive: true });
  await mkdir(join(root, 'empty-dir'));
  await mkdir(join(root, 'with space/and  two'), { recursive: true });
  await mkdir(join(root, 'ünïcødé-日本'));
  await writeFile(join(root, 'a/b/file.txt'), 'hello from lifeboat\n'.repeat(1000));
  await writeFile(join(root, 'a/b/c/deep.txt'), 'deep\n');
  await writeFile(join(root, 'with space/and  two/file with spaces.txt'), 'spaces\n');
  await writeFile(join(root, 'ünïcødé-日本/файл.txt'), 'unicode\n');
  await writeFile(join(root, '-leading-dash'), 'dash\n');
  await writeFile(join(root, 'x'.repeat(120) + '.long-name'), 'a long name\n');
  const deep = join(root, ...Array.from({ length: 12 }, (_, i) => `level-${i}-${'d'.repeat(20)}`));
  await mkdir(deep, { recursive: true });
  await writeFile(join(deep, 'far-down.txt'), 'far\n');
  await writeFile(join(root, 'secret.key'), 'private\n', { mode: 0o600 });
  await chmod(join(root, 'secret.key'), 0o600);
  await writeFile(join(root, 'run.sh'), '#!/bin/sh\necho hi\n');
  await chmod(join(root, 'run.sh'), 0o755);
  await writeFile(join(root, 'group-read'), 'g\n');
  await chmod(join(root, 'group-read'), 0o640);
  await chmod(join(root, 'a'), 0o750);
  await writeFile(join(root, 'empty-file'), '');
  await symlink('a/b/file.txt', join(root, 'link-to-file'));
  await symlink('a', join(root, 'link-to-dir'));
  await symlink('does-not-exist', join(root, 'dangling-link'));
  await writeBigFile(join(root, 'big.bin'), options.bigFileBytes);
  // Fixed mtimes (whole seconds) on files and directories, deepest first so parents keep theirs.
  const when = new Date('2024-02-29T12:34:56Z');
  const entries = (await walk(root)).reverse();
  for (const entry of entries) if (!entry.isLink) await utimes(join(root, entry.path), when, when);
  await utimes(root, when, when);
}

/**
 * Incompressible content that never repeats (an AES-CTR keystream: fast, and unlike a repeated random block it
 * neither deduplicates nor compresses), written in 1 MiB blocks.
 */
export async function writeBigFile(path: string, bytes: number): Promise<void> {
  const keystream = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(1024 * 1024);
  const handle = await open(path, 'w');
  try {
    for (let written = 0; written < bytes; ) {
      const size = Math.min(zeros.length, bytes - written);
      await handle.write(keystream.update(zeros.subarray(0, size)));
      written += size;
    }
  } finally {
    await handle.close();
  }
}

interface Entry {
  path: string;
  isLink: boolean;
}

async function walk(root: string, dir = root, out: Entry[] = []): Promise<Entry[]> {
  for (const name of (await readdir(dir)).sort()) {
    const full = join(dir, name);
    const st = await lstat(full);
    out.push({ path: relative(root, full), isLink: st.isSymbolicLink() });
    if (st.isDirectory()) await walk(root, full, out);
  }
  return out;
}

function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => hash.update(d))
      .on('end', () => res(hash.digest('hex')))
      .on('error', rej);
  });
}

/** Every entry as a line: path, type, mode, uid:gid, mtime (s), size, content hash or link target. */
export async function describeTree(root: string): Promise<string[]> {
  const lines: string[] = [];
  for (const entry of await walk(root)) {
    const full = join(root, entry.path);
    const st = await lstat(full);
    const type = st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
    const content = type === 'file' ? await sha256File(full) : type === 'link' ? `-> ${await readlink(full)}` : '';
    const mtime = type === 'link' ? '' : String(Math.floor(st.mtimeMs / 1000));
    const mode = type === 'link' ? '' : (st.mode & 0o7777).toString(8);
    lines.push([entry.path, type, mode, `${st.uid}:${st.gid}`, mtime, type === 'file' ? st.size : '', content].join(' | '));
  }
  return lines;
}

import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FileWriters, type FileToHand } from './file-writers.js';

let base = '';
let writers: FileWriters | null = null;

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-writers-'));
});
afterEach(async () => {
  await writers?.close();
  writers = null;
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

function start(size = 2): FileWriters {
  writers = FileWriters.create(size);
  // The restore tests in sources/files.test.ts go through the writers too, when this holds.
  expect(writers).not.toBeNull();
  return writers!;
}

function hand(w: FileWriters, file: Partial<FileToHand> & { path: string }, content: Buffer): void {
  const handed = w.hand({ mode: 0o644, size: content.length, atimeMs: null, mtimeMs: null, uid: null, gid: null, ...file });
  // In pieces, as node-tar gives a file's data.
  for (let at = 0; at < content.length; at += 1000) handed.write(content.subarray(at, at + 1000));
  handed.end();
}

describe('FileWriters', () => {
  it('writes every handed file whole, with its mode and exact times, by the time the barrier returns', () => {
    const w = start();
    const dir = fs.mkdtempSync(path.join(base, 'many-'));
    for (let d = 0; d < 3; d++) fs.mkdirSync(path.join(dir, `d${d}`));
    for (let i = 0; i < 300; i++) {
      hand(w, { path: path.join(dir, `d${i % 3}`, `f${i}`), mode: i % 2 ? 0o600 : 0o640, mtimeMs: 1_600_000_000_123 + i * 1000, atimeMs: 1_600_000_000_000 }, Buffer.alloc(i * 37, `file ${i};`));
    }
    w.barrier();
    for (let i = 0; i < 300; i++) {
      const file = path.join(dir, `d${i % 3}`, `f${i}`);
      expect(fs.readFileSync(file).equals(Buffer.alloc(i * 37, `file ${i};`))).toBe(true);
      const info = fs.statSync(file);
      expect(info.mode & 0o777).toBe(i % 2 ? 0o600 : 0o640);
      expect(info.mtimeMs).toBe(1_600_000_000_123 + i * 1000);
    }
  });

  it('makes an entry that depends on a handed file wait until that file is written', () => {
    const w = start(1);
    const dir = fs.mkdtempSync(path.join(base, 'order-'));
    const file = path.join(dir, 'target');
    hand(w, { path: file }, Buffer.alloc(500_000, 'x'));
    // A link to it, or the same path again: the file must exist, whole, before the entry is made.
    w.before(path.join(dir, 'link-to-target'), 'other');
    expect(fs.statSync(file).size).toBe(500_000);
    hand(w, { path: file }, Buffer.from('second copy'));
    w.before(file, 'file');
    expect(fs.readFileSync(file, 'utf8')).toBe('second copy');
  });

  it('streams a large file through in parts, between small ones, and sets its times and owner once whole', () => {
    const w = start(2);
    const dir = fs.mkdtempSync(path.join(base, 'large-'));
    const large = Buffer.alloc(3_000_001);
    for (let i = 0; i + 4 <= large.length; i += 4) large.writeUInt32LE(i, i);
    hand(w, { path: path.join(dir, 'before') }, Buffer.from('small before'));
    const handed = w.hand({ path: path.join(dir, 'large'), mode: 0o600, size: large.length, atimeMs: 1_600_000_000_000, mtimeMs: 1_600_000_000_456, uid: 1234, gid: 2345 });
    // Pieces of every size, as node-tar gives a file's data, with more than the file holds at the end.
    let at = 0;
    for (const size of [1, 511, 65_536, 300_000, 1_048_576]) {
      handed.write(large.subarray(at, at + size));
      at += size;
    }
    handed.write(Buffer.concat([large.subarray(at), Buffer.from('beyond the end')]));
    handed.end();
    hand(w, { path: path.join(dir, 'after') }, Buffer.from('small after'));
    w.barrier();
    expect(fs.readFileSync(path.join(dir, 'large')).equals(large)).toBe(true);
    const info = fs.statSync(path.join(dir, 'large'));
    expect(info.mode & 0o777).toBe(0o600);
    expect(info.mtimeMs).toBe(1_600_000_000_456);
    if (process.getuid?.() === 0) expect([info.uid, info.gid]).toEqual([1234, 2345]);
    expect(fs.readFileSync(path.join(dir, 'before'), 'utf8')).toBe('small before');
    expect(fs.readFileSync(path.join(dir, 'after'), 'utf8')).toBe('small after');
  });

  it('keeps what arrived of a large file cut short, with its times', () => {
    const w = start(1);
    const dir = fs.mkdtempSync(path.join(base, 'cut-'));
    for (const arrived of [0, 1000, 256 * 1024, 600_000]) {
      const file = path.join(dir, `cut-${arrived}`);
      const handed = w.hand({ path: file, mode: 0o644, size: 1_000_000, atimeMs: null, mtimeMs: 1_600_000_000_000, uid: null, gid: null });
      if (arrived > 0) handed.write(Buffer.alloc(arrived, 'y'));
      handed.end();
    }
    w.barrier();
    for (const arrived of [0, 1000, 256 * 1024, 600_000]) {
      const file = path.join(dir, `cut-${arrived}`);
      expect(fs.readFileSync(file).equals(Buffer.alloc(arrived, 'y'))).toBe(true);
      expect(fs.statSync(file).mtimeMs).toBe(1_600_000_000_000);
    }
  });

  it.each([
    ['a small file', Buffer.from('through the link')],
    ['a large file (in any of its parts)', Buffer.alloc(1_000_000, 'z')],
  ])('reports %s it cannot write, naming it, and never writes through a symlink', (_what, content) => {
    const w = start();
    const dir = fs.mkdtempSync(path.join(base, 'fail-'));
    const outside = path.join(dir, '..', `outside-${path.basename(dir)}`);
    fs.writeFileSync(outside, 'untouched');
    fs.symlinkSync(outside, path.join(dir, 'link'));
    expect(() => {
      hand(w, { path: path.join(dir, 'link') }, content);
      w.barrier();
    }).toThrow(`cannot write ${path.join(dir, 'link')}`);
    expect(fs.readFileSync(outside, 'utf8')).toBe('untouched');
  });

  it('fails the next call once a writer failed (a directory that is not there)', () => {
    const w = start();
    const missing = path.join(base, 'no-such-dir', 'file');
    hand(w, { path: missing }, Buffer.from('lost'));
    expect(() => {
      w.barrier();
    }).toThrow(/no-such-dir\/file: ENOENT/);
  });
});

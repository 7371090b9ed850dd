// Measuring tools for the benchmark: wall time, CPU time (user+sys) and peak RSS of the processes a tool runs,
// sizes of repositories, and content digests of trees (to check every restore).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listFiles } from './corpus.mjs';

export const MiB = 2 ** 20;
const CLK_TCK = 100; // getconf CLK_TCK on Linux x86-64

/**
 * Starts a program under GNU time (`/usr/bin/time`), which reports the exact rusage of the program and
 * everything it waited for (threads included): user and system seconds and the peak RSS.
 */
export function startTimed(program, args, { cwd, env, stdio = ['ignore', 'pipe', 'pipe'], captureStdout = true } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'bench-time-'));
  const report = join(dir, 'time');
  const started = process.hrtime.bigint();
  const child = spawn('/usr/bin/time', ['-o', report, '-f', '%U %S %M', program, ...args], { cwd, env: { ...process.env, ...env }, stdio });
  let stdout = '';
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  // A stdout piped into another program is left alone (reading it here would steal its data).
  if (captureStdout) child.stdout?.on('data', (d) => (stdout = (stdout + d).slice(-20000)));
  child.stderr?.on('data', (d) => (stderr = (stderr + d).slice(-20000)));
  const done = new Promise((resolve, reject) => {
    child.on('error', reject);
    // 'exit', not 'close': a stdout handed on to another program is never closed here.
    const closed = (stream) => (stream && !stream.destroyed ? new Promise((r) => stream.once('close', r)) : Promise.resolve());
    const streamsDone = Promise.all([closed(child.stderr), captureStdout ? closed(child.stdout) : null]);
    child.on('exit', async (code) => {
      const wall = Number(process.hrtime.bigint() - started) / 1e9;
      await streamsDone;
      let user = NaN;
      let sys = NaN;
      let rssKiB = NaN;
      try {
        const last = readFileSync(report, 'utf8').trim().split('\n').pop();
        [user, sys, rssKiB] = last.split(' ').map(Number);
      } catch {
        // no report: the program could not be started
      }
      rmSync(dir, { recursive: true, force: true });
      resolve({ code, wall, user, sys, cpu: user + sys, rss: rssKiB * 1024, stdout, stderr });
    });
  });
  return { child, done };
}

/** Runs a program to its end under GNU time; throws unless it exits 0 (or the code is in `ok`). */
export async function timed(program, args, options = {}) {
  const { done } = startTimed(program, args, options);
  const result = await done;
  if (result.code !== 0 && !(options.ok ?? []).includes(result.code)) {
    throw new Error(`${program} ${args.join(' ')} exited ${result.code}:\n${result.stderr.slice(-3000)}\n${result.stdout.slice(-2000)}`);
  }
  return result;
}

/** Runs a program, returning its stdout (no timing). */
export function output(program, args, { cwd, env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${program} ${args.join(' ')} exited ${code}: ${err.trim().slice(-2000)}`))));
  });
}

/** CPU seconds (user+sys, all threads) a live process has used so far, from /proc/<pid>/stat. */
export function processCpu(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** User and system CPU seconds of each thread of a live process (tid → { user, sys }), from /proc/<pid>/task. */
export function threadCpu(pid) {
  const out = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), { user: Number(fields[11]) / CLK_TCK, sys: Number(fields[12]) / CLK_TCK });
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** Per-thread CPU used between two threadCpu() readings, busiest first; the main thread (tid = pid) is marked. */
export function threadCpuDelta(pid, before, after) {
  const rows = [];
  for (const [tid, a] of after) {
    const b = before.get(tid) ?? { user: 0, sys: 0 };
    const user = a.user - b.user;
    const sys = a.sys - b.sys;
    if (user + sys > 0) rows.push({ thread: tid === pid ? 'main' : `tid ${tid}`, user: Number(user.toFixed(2)), sys: Number(sys.toFixed(2)) });
  }
  return rows.sort((x, y) => y.user + y.sys - (x.user + x.sys));
}

/** Peak RSS (VmHWM) of a live process, in bytes. */
export function processPeakRss(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
}

/** Resets a live process's peak RSS to its current RSS (clear_refs 5), so a phase's peak can be measured. */
export function resetPeakRss(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Apparent size of everything under a path (like `du -sb`), in bytes. */
export function treeBytes(path) {
  let st;
  try {
    st = statSync(path);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const e of readdirSync(path, { withFileTypes: true })) total += e.isDirectory() ? treeBytes(join(path, e.name)) : e.isFile() ? statSync(join(path, e.name)).size : 0;
  return total;
}

/** Where deleteTree notes its deletions, for quietAfterDeletions (in any later run of the bench too). */
const DELETIONS_FILE = join(tmpdir(), 'lifeboat-bench-deletions.json');
const RECENT_MS = 15 * 60 * 1000;

function recentDeletions() {
  try {
    return JSON.parse(readFileSync(DELETIONS_FILE, 'utf8')).filter((d) => Date.now() - d.at < RECENT_MS);
  } catch {
    return [];
  }
}

function countEntries(root) {
  let n = 1;
  if (statSync(root).isDirectory()) for (const e of readdirSync(root, { withFileTypes: true })) n += e.isDirectory() ? countEntries(join(root, e.name)) : 1;
  return n;
}

/**
 * Deletes a large tree (a corpus, restored trees) and notes when and how many inodes. This disk's ext4 has no
 * journal, and then its inode allocator skips every inode deleted in the last 60 s (360 s while its inode
 * table block is not yet written back), rescanning them for each file it creates (fs/ext4/ialloc.c
 * recently_deleted): a restore started soon after deleting a tree of 70 000 files ran 2-3 times slower, most of
 * its CPU in that scan, and after deleting 550 000 the disk stayed so for about 8 minutes.
 */
export function deleteTree(root) {
  if (!existsSync(root)) return;
  const inodes = countEntries(root);
  rmSync(root, { recursive: true, force: true });
  writeFileSync(DELETIONS_FILE, JSON.stringify([...recentDeletions(), { at: Date.now(), inodes }]));
}

/**
 * Waits until the deletions deleteTree noted are old enough not to slow the files a restore creates: a minute
 * after the last, plus a second per 1 000 inodes deleted in the last 15 minutes, at most 10 minutes in all.
 * Returns the seconds waited. (settleFileCreation's probe alone missed it: its files may land where no inode
 * was deleted.)
 */
export async function quietAfterDeletions(say = () => {}) {
  const recent = recentDeletions();
  if (recent.length === 0) return 0;
  const inodes = recent.reduce((n, d) => n + d.inodes, 0);
  const last = Math.max(...recent.map((d) => d.at));
  const waitMs = last + Math.min(10 * 60 * 1000, 60 * 1000 + inodes) - Date.now();
  if (waitMs <= 0) return 0;
  say(`waiting ${(waitMs / 1000).toFixed(0)} s before restoring: ${inodes} inodes deleted in the last minutes slow file creation on this disk`);
  await new Promise((r) => setTimeout(r, waitMs));
  return waitMs / 1000;
}

/**
 * Waits (up to `limitSeconds`) until creating a file is fast again, probing every few seconds; returns the last
 * probe in µs. After a large deletion (an earlier run's outputs, a restore target) the disk stays slow for half a
 * minute or more here; a timed restore started then measures the disk's aftermath more than the tool.
 */
export async function settleFileCreation(dir, { fastUs = 60, limitSeconds = 120, files = 500 } = {}) {
  const deadline = Date.now() + limitSeconds * 1000;
  for (let i = 0; ; i++) {
    const us = probeFileCreation(join(dir, `settle-${Date.now()}-${i}`), files);
    if (us <= fastUs || Date.now() > deadline) return us;
    await new Promise((r) => setTimeout(r, 3000));
  }
}

/**
 * How long creating a small file takes on this disk right now, in µs (2000 files of 4 KiB, each created,
 * written and closed). On our VMs this swings from about 25 to 500 µs with what the disk did before (large
 * deletions are the worst), and a restore of tens of thousands of files swings with it: recorded before each
 * restore so runs can be compared. The files stay until the run's end (deleting them would disturb the next).
 */
export function probeFileCreation(dir, files = 2000) {
  mkdirSync(dir, { recursive: true });
  const data = Buffer.alloc(4096, 'p');
  const start = process.hrtime.bigint();
  for (let i = 0; i < files; i++) writeFileSync(join(dir, `f${i}`), data);
  return Number(process.hrtime.bigint() - start) / 1000 / files;
}

/** Reads every file under root once (so a timed run starts with it in the page cache). Returns bytes read. */
export function readThrough(root) {
  const buf = Buffer.allocUnsafe(4 * MiB);
  let total = 0;
  const readFile = (full) => {
    const fd = openSync(full, 'r');
    try {
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) total += n;
    } finally {
      closeSync(fd);
    }
  };
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.isFile()) readFile(full);
    }
  };
  if (statSync(root).isDirectory()) walk(root);
  else readFile(root);
  return total;
}

/** Content digest of a corpus tree: relative path → size, SHA-256 and mtime (seconds). */
export function digestTree(root) {
  const buf = Buffer.allocUnsafe(4 * MiB);
  const out = new Map();
  let bytes = 0;
  for (const f of listFiles(root)) {
    const hash = createHash('sha256');
    const fd = openSync(f.full, 'r');
    try {
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) hash.update(buf.subarray(0, n));
    } finally {
      closeSync(fd);
    }
    out.set(f.rel, { size: f.size, sha: hash.digest('hex'), mtime: Math.floor(statSync(f.full).mtimeMs / 1000) });
    bytes += f.size;
  }
  return { files: out, bytes };
}

/** Compares a restored tree with the digest of the original: what is missing, extra or different. */
export function compareTrees(expected, restoredRoot) {
  let actual;
  try {
    actual = digestTree(restoredRoot);
  } catch (err) {
    return { ok: false, summary: `cannot read ${restoredRoot}: ${err.message}` };
  }
  let missing = 0;
  let differ = 0;
  let mtimes = 0;
  for (const [rel, want] of expected.files) {
    const got = actual.files.get(rel);
    if (!got) missing++;
    else if (got.sha !== want.sha || got.size !== want.size) differ++;
    else if (got.mtime !== want.mtime) mtimes++;
  }
  const extra = [...actual.files.keys()].filter((rel) => !expected.files.has(rel)).length;
  const ok = missing === 0 && differ === 0 && extra === 0;
  return {
    ok,
    missing,
    differ,
    extra,
    mtimes,
    summary: ok ? `all ${expected.files.size} files identical${mtimes ? ` (${mtimes} mtimes differ)` : ''}` : `${missing} missing, ${differ} different, ${extra} extra of ${expected.files.size}`,
  };
}

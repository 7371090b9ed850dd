#!/usr/bin/env node
// The benchmark corpus: about --size bytes of mixed files, the same bytes for the same --seed.
//
//   node bench/corpus.mjs generate DIR [--size 1G] [--seed 1] [--force]
//   node bench/corpus.mjs mutate DIR [--percent 2] [--seed 1]
//
// Mix (fractions of --size): application and access logs 30%, incompressible media (seeded PRNG bytes) 30%,
// WAV audio 3%, a VM disk image (zero, random, text and record blocks) 8%, two releases that share most bytes
// 4%, source files 15% and JSON documents 6% (tens of thousands of small files in a tree), CSV exports 4%.
// `mutate` changes about --percent of the bytes the way a day does: logs appended, media and disk blocks
// rewritten in the middle, rows inserted into CSVs, functions inserted into source files, new files, a few
// deleted files. File times are fixed too, so a regenerated corpus is identical down to the metadata.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { Rng } from './prng.mjs';
import { Clock, CSV_HEADER, csvRow, jsonDocument, sourceFile, SERVICES, WORDS, writeLog } from './textgen.mjs';

export const STATE_FILE = '.bench-corpus.json';
const BASE_MS = Date.UTC(2024, 4, 1); // 2024-05-01: log days count from here
const MTIME_S = Date.UTC(2024, 5, 1) / 1000; // generated files' mtime
const DAY_MS = 86_400_000;
const IO_BLOCK = 4 * 1024 * 1024;

export function parseSize(text) {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(String(text).trim());
  if (!m) throw new Error(`not a size: ${text} (e.g. 256M, 1G)`);
  return Math.round(Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase()));
}

/** Buffers text and writes it in large latin1 pieces (everything generated is ASCII). */
class TextSink {
  constructor(fd) {
    this.fd = fd;
    this.parts = [];
    this.pending = 0;
    this.written = 0;
  }
  put(text) {
    this.parts.push(text);
    this.pending += text.length;
    if (this.pending >= 1 << 20) this.flush();
  }
  flush() {
    if (!this.pending) return;
    writeSync(this.fd, this.parts.join(''), null, 'latin1');
    this.written += this.pending;
    this.parts = [];
    this.pending = 0;
  }
}

class Writer {
  constructor(root) {
    this.root = root;
    this.dirs = new Set();
    this.files = 0;
    this.bytes = 0;
    this.scratch = Buffer.allocUnsafeSlow(IO_BLOCK);
  }
  path(rel) {
    const full = join(this.root, rel);
    const dir = dirname(full);
    if (!this.dirs.has(dir)) {
      mkdirSync(dir, { recursive: true });
      this.dirs.add(dir);
    }
    return full;
  }
  done(full, size) {
    this.files++;
    this.bytes += size;
    utimesSync(full, MTIME_S, MTIME_S + this.files);
  }
  text(rel, text) {
    const full = this.path(rel);
    writeFileSync(full, text, 'latin1');
    this.done(full, text.length);
  }
  /** A file written through a TextSink by `fill(sink)`. */
  stream(rel, fill) {
    const full = this.path(rel);
    const fd = openSync(full, 'w');
    const sink = new TextSink(fd);
    try {
      fill(sink);
      sink.flush();
    } finally {
      closeSync(fd);
    }
    this.done(full, sink.written);
  }
  random(rel, rng, size) {
    const full = this.path(rel);
    const fd = openSync(full, 'w');
    try {
      for (let left = size; left > 0; left -= IO_BLOCK) writeSync(fd, rng.fill(this.scratch.subarray(0, Math.min(IO_BLOCK, left))));
    } finally {
      closeSync(fd);
    }
    this.done(full, size);
  }
  buffer(rel, buf) {
    const full = this.path(rel);
    writeFileSync(full, buf);
    this.done(full, buf.length);
  }
}

const MIX = { logs: 0.3, media: 0.3, audio: 0.03, vm: 0.08, releases: 0.04, src: 0.15, json: 0.06, csv: 0.04 };

export function generateCorpus(root, { size, seed }) {
  root = resolve(root);
  const started = Date.now();
  const w = new Writer(root);
  mkdirSync(root, { recursive: true });
  const budget = (part) => Math.round(size * MIX[part]);
  const rngFor = (...what) => new Rng(seed, ...what);

  // Logs: a file per service and day, plus the web server's access logs.
  {
    const rng = rngFor('logs');
    const median = Math.max(128 * 1024, Math.round(size * 0.004));
    const days = new Map();
    for (let left = budget('logs'); left > 0; ) {
      const service = rng.chance(0.25) ? 'nginx' : rng.pick(SERVICES);
      const day = days.get(service) ?? 0;
      days.set(service, day + 1);
      const bytes = Math.min(left, rng.logNormal(median, 0.7, 16 * 1024, 64 * 1024 * 1024));
      const date = new Date(BASE_MS + day * DAY_MS).toISOString().slice(0, 10);
      const rel = service === 'nginx' ? `logs/nginx/access-${date}.log` : `logs/${service}/${service}-${date}.log`;
      const fileRng = rngFor('log', rel);
      w.stream(rel, (sink) => writeLog(sink, fileRng, bytes, { kind: service === 'nginx' ? 'access' : 'app', service, startMs: BASE_MS + day * DAY_MS }));
      left -= bytes;
    }
  }

  // Media: photos, videos and archives are already compressed, i.e. random to any compressor.
  {
    const rng = rngFor('media');
    let n = 0;
    for (let left = budget('media'); left > 0; n++) {
      const kind = rng.weighted([5, 3, 2]);
      const bytes = Math.min(left, [() => rng.range(256 * 1024, 6 * 1024 * 1024), () => rng.range(4 * 1024 * 1024, 48 * 1024 * 1024), () => rng.range(1024 * 1024, 24 * 1024 * 1024)][kind]());
      const rel = [`media/photos/${2019 + (n % 6)}/IMG_${String(1000 + n).padStart(5, '0')}.jpg`, `media/video/clip-${n}.mp4`, `media/archive/${rng.pick(WORDS)}-${n}.zip`][kind];
      w.random(rel, rngFor('media', rel), bytes);
      left -= bytes;
    }
  }

  // Audio: 16-bit PCM (tones and noise), somewhat compressible.
  {
    const rng = rngFor('audio');
    let n = 0;
    for (let left = budget('audio'); left > 44; n++) {
      const bytes = Math.min(left, rng.range(1024 * 1024, 8 * 1024 * 1024)) & ~1;
      w.buffer(`media/audio/track-${n}.wav`, wav(rngFor('audio', n), bytes));
      left -= bytes;
    }
  }

  // A VM disk image: runs of zeros, random blocks (compressed data), text blocks and fixed-size records.
  {
    const rng = rngFor('vm');
    const full = w.path('vm/disk.img');
    const fd = openSync(full, 'w');
    const total = budget('vm');
    try {
      for (let offset = 0; offset < total; offset += 65536) writeSync(fd, diskBlock(rng, Math.min(65536, total - offset)));
    } finally {
      closeSync(fd);
    }
    w.done(full, total);
  }

  // Two releases: the second is the first with a few insertions and rewrites (dedup within one backup).
  {
    const rng = rngFor('releases');
    const half = Math.round(budget('releases') / 2);
    const segments = [];
    for (let left = half; left > 0; ) {
      const seg = rng.chance(0.6) ? rng.fill(Buffer.allocUnsafe(Math.min(left, rng.range(256 * 1024, 2 * 1024 * 1024)))) : Buffer.from(sourceFile(rng, Math.min(left, rng.range(32 * 1024, 256 * 1024)), 'ts'), 'latin1').subarray(0, left);
      segments.push(seg);
      left -= seg.length;
    }
    const v1 = Buffer.concat(segments);
    w.buffer('releases/app-1.0.tar', v1);
    w.buffer('releases/app-1.1.tar', editBuffer(rng, v1, { inserts: 5, rewrites: 2 }));
  }

  // Source code: tens of thousands of small files in a package tree.
  {
    const rng = rngFor('src');
    let left = budget('src');
    for (let pkg = 0; left > 0; pkg++) {
      const pkgName = `${rng.pick(WORDS)}-${rng.pick(WORDS)}`;
      const ext = rng.chance(0.7) ? 'ts' : 'py';
      const subdirs = rng.range(3, 12);
      for (let s = 0; s < subdirs && left > 0; s++) {
        const sub = `${rng.pick(WORDS)}${s}`;
        const files = rng.range(10, 120);
        for (let f = 0; f < files && left > 0; f++) {
          const bytes = rng.logNormal(2500, 1.0, 120, 96 * 1024);
          const rel = `src/${pkg}-${pkgName}/${sub}/${rng.pick(WORDS)}-${f}.${ext}`;
          const text = sourceFile(rngFor('src', rel), bytes, ext);
          w.text(rel, text);
          left -= text.length;
        }
      }
    }
  }

  // JSON documents: one per record, by type and month.
  {
    const rng = rngFor('json');
    let left = budget('json');
    for (let n = 0; left > 0; n++) {
      const type = rng.pick(['orders', 'customers', 'events', 'invoices', 'tickets']);
      const rel = `data/${type}/${2021 + (n % 4)}/${String(1 + (n % 12)).padStart(2, '0')}/${rng.hex(16)}.json`;
      const text = jsonDocument(rngFor('json', rel), rng.logNormal(1500, 0.7, 300, 64 * 1024), BASE_MS - 3 * 365 * DAY_MS);
      w.text(rel, text);
      left -= text.length;
    }
  }

  // CSV exports: a file per month.
  {
    const rng = rngFor('csv');
    let left = budget('csv');
    for (let month = 0; left > 0; month++) {
      const bytes = Math.min(left, rng.range(Math.round(size * 0.003), Math.round(size * 0.008)));
      const rel = `exports/sales-${2020 + Math.floor(month / 12)}-${String(1 + (month % 12)).padStart(2, '0')}.csv`;
      const fileRng = rngFor('csv', rel);
      const clock = new Clock(Date.UTC(2020 + Math.floor(month / 12), month % 12, 1));
      w.stream(rel, (sink) => {
        sink.put(CSV_HEADER);
        while (sink.written + sink.pending < bytes) sink.put(csvRow(fileRng, clock));
      });
      left -= bytes;
    }
  }

  const state = { seed, size, files: w.files, bytes: w.bytes, mutations: 0 };
  writeFileSync(join(root, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  utimesSync(join(root, STATE_FILE), MTIME_S, MTIME_S);
  fixDirTimes(root, MTIME_S);
  return { ...state, seconds: (Date.now() - started) / 1000 };
}

function wav(rng, bytes) {
  const buf = Buffer.alloc(bytes);
  const samples = (bytes - 44) >> 1;
  buf.write('RIFF', 0, 'latin1');
  buf.writeUInt32LE(bytes - 8, 4);
  buf.write('WAVEfmt ', 8, 'latin1');
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(44100, 24);
  buf.writeUInt32LE(88200, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36, 'latin1');
  buf.writeUInt32LE(samples * 2, 40);
  const pcm = new Int16Array(buf.buffer, buf.byteOffset + 44, samples);
  const f1 = (2 * Math.PI * (110 + rng.int(660))) / 44100;
  const f2 = (2 * Math.PI * (220 + rng.int(1320))) / 44100;
  let noise = 0;
  for (let i = 0; i < samples; i++) {
    if ((i & 7) === 0) noise = rng.int(2001) - 1000;
    const env = 0.5 + 0.5 * Math.sin(i / 20000);
    pcm[i] = Math.round(env * (9000 * Math.sin(f1 * i) + 4000 * Math.sin(f2 * i)) + noise);
  }
  return buf;
}

function diskBlock(rng, size) {
  switch (rng.weighted([40, 30, 20, 10])) {
    case 0:
      return Buffer.alloc(size);
    case 1:
      return rng.fill(Buffer.allocUnsafe(size));
    case 2:
      return Buffer.from(sourceFile(rng, size, rng.chance(0.5) ? 'ts' : 'py').padEnd(size, '\0').slice(0, size), 'latin1');
    default: {
      // Fixed 64-byte records: a counter, a timestamp, a few small fields, zero padding.
      const buf = Buffer.alloc(size);
      let t = 1_700_000_000 + rng.int(10_000_000);
      for (let off = 0; off + 64 <= size; off += 64) {
        buf.writeUInt32LE(off / 64, off);
        buf.writeUInt32LE((t += rng.int(5)), off + 4);
        buf.writeUInt16LE(rng.int(500), off + 8);
        buf.writeUInt32LE(rng.int(1_000_000), off + 12);
      }
      return buf;
    }
  }
}

/** A copy of `buf` with a few text insertions and random rewrites (offsets chosen by rng). */
function editBuffer(rng, buf, { inserts, rewrites }) {
  const out = Buffer.from(buf);
  for (let i = 0; i < rewrites; i++) {
    const len = Math.min(out.length >> 3, 128 * 1024);
    const at = rng.int(out.length - len);
    rng.fill(out.subarray(at, at + len));
  }
  const cuts = Array.from({ length: inserts }, () => rng.int(out.length)).sort((a, b) => a - b);
  const pieces = [];
  let from = 0;
  for (const cut of cuts) {
    pieces.push(out.subarray(from, cut), Buffer.from(sourceFile(rng, rng.range(1024, 4096), 'ts'), 'latin1'));
    from = cut;
  }
  pieces.push(out.subarray(from));
  return Buffer.concat(pieces);
}

function fixDirTimes(root, seconds) {
  const dirs = [];
  const walk = (dir) => {
    dirs.push(dir);
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(join(dir, e.name));
  };
  walk(root);
  for (const dir of dirs.reverse()) utimesSync(dir, seconds, seconds);
}

/** Every regular file under root (but the state file), sorted, with its size. */
export function listFiles(root) {
  const out = [];
  const walk = (dir) => {
    const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const full = join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.isFile() && !(dir === root && e.name === STATE_FILE)) out.push({ rel: relative(root, full), full, size: statSync(full).size });
    }
  };
  walk(root);
  return out;
}

export function readState(root) {
  try {
    return JSON.parse(readFileSync(join(root, STATE_FILE), 'utf8'));
  } catch {
    return null;
  }
}

export function mutateCorpus(root, { percent, seed }) {
  root = resolve(root);
  const state = readState(root);
  if (!state) throw new Error(`${root} has no ${STATE_FILE}: generate the corpus first`);
  const generation = state.mutations + 1;
  const rng = new Rng(seed, 'mutate', generation);
  const files = listFiles(root);
  const total = files.reduce((s, f) => s + f.size, 0);
  const budget = (share) => Math.round((total * percent * share) / 100);
  const mtime = MTIME_S + 30 * 86400 + generation * 86400;
  const touched = new Set();
  const report = { generation, corpusBytes: total, appended: 0, rewritten: 0, inserted: 0, added: 0, addedFiles: 0, deletedFiles: 0, deletedBytes: 0, changedFiles: 0 };
  const group = (prefix, test = () => true) => files.filter((f) => f.rel.startsWith(prefix) && test(f));
  const touch = (full) => {
    touched.add(full);
    utimesSync(full, mtime, mtime + touched.size);
  };
  const shuffled = (list) => {
    const a = list.slice();
    for (let i = a.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  };
  const dayMs = BASE_MS + (60 + generation) * DAY_MS;

  // Logs grow: about half of them get new lines at the end.
  {
    const logs = shuffled(group('logs/'));
    const chosen = logs.slice(0, Math.max(1, logs.length >> 1));
    const each = Math.ceil(budget(0.3) / chosen.length);
    for (const f of chosen) {
      const fd = openSync(f.full, 'a');
      const sink = new TextSink(fd);
      try {
        const access = f.rel.startsWith('logs/nginx/');
        writeLog(sink, new Rng(seed, 'mutate-log', generation, f.rel), each, { kind: access ? 'access' : 'app', service: f.rel.split('/')[1], startMs: dayMs });
        sink.flush();
      } finally {
        closeSync(fd);
      }
      report.appended += sink.written;
      touch(f.full);
    }
  }

  // Media and the disk image: regions rewritten in the middle of files.
  const rewrite = (f, at, len, fillBlock) => {
    const fd = openSync(f.full, 'r+');
    try {
      writeSync(fd, fillBlock(len), 0, len, at);
    } finally {
      closeSync(fd);
    }
    report.rewritten += len;
    touch(f.full);
  };
  {
    let left = budget(0.2);
    for (const f of shuffled(group('media/', (f) => !f.rel.endsWith('.wav') && f.size > 256 * 1024))) {
      if (left <= 0) break;
      const len = Math.min(left, f.size >> 2, rng.logNormal(512 * 1024, 0.8, 4096, 4 * 1024 * 1024));
      rewrite(f, Math.floor(f.size / 4) + rng.int(Math.floor(f.size / 2) - len + 1), len, (n) => rng.fill(Buffer.allocUnsafe(n)));
      left -= len;
    }
    const disk = group('vm/')[0];
    if (disk) {
      for (let left = budget(0.05); left > 0; left -= 65536) {
        const block = rng.int(Math.floor(disk.size / 65536));
        rewrite(disk, block * 65536, Math.min(65536, disk.size - block * 65536), (n) => diskBlock(rng, n));
      }
    }
  }

  // CSV exports and source files: text inserted in the middle (everything after it shifts).
  const insertAtLine = (f, text) => {
    const old = readFileSync(f.full);
    let at = old.indexOf(10, rng.int(old.length));
    at = at < 0 ? old.length : at + 1;
    writeFileSync(f.full, Buffer.concat([old.subarray(0, at), Buffer.from(text, 'latin1'), old.subarray(at)]));
    report.inserted += text.length;
    touch(f.full);
  };
  {
    let left = budget(0.05);
    for (const f of shuffled(group('exports/'))) {
      if (left <= 0) break;
      const clock = new Clock(dayMs);
      let rows = '';
      while (rows.length < Math.min(left, 2 * 1024 * 1024)) rows += csvRow(rng, clock);
      insertAtLine(f, rows);
      left -= rows.length;
    }
    left = budget(0.1);
    for (const f of shuffled(group('src/'))) {
      if (left <= 0) break;
      const ext = f.rel.endsWith('.py') ? 'py' : 'ts';
      const text = sourceFile(rng, rng.range(600, 2400), ext).split('\n\n').slice(ext === 'py' ? 3 : 2).join('\n\n');
      insertAtLine(f, text);
      left -= text.length;
    }
  }

  // New files: a few photos, new JSON documents and source files.
  {
    const add = (rel, buf) => {
      const full = join(root, rel);
      mkdirSync(dirname(full), { recursive: true });
      writeFileSync(full, buf);
      report.added += buf.length;
      report.addedFiles++;
      touch(full);
    };
    let left = budget(0.15);
    for (let i = 0; left > 0; i++) {
      const bytes = Math.min(left, rng.range(1024 * 1024, 8 * 1024 * 1024));
      add(`media/photos/new/IMG_g${generation}_${i}.jpg`, rng.fill(Buffer.allocUnsafe(bytes)));
      left -= bytes;
    }
    left = budget(0.1);
    for (let i = 0; left > 0; i++) {
      const text = i % 3 === 2 ? sourceFile(rng, rng.logNormal(2500, 1, 120, 64 * 1024), 'ts') : jsonDocument(rng, rng.logNormal(1500, 0.7, 300, 64 * 1024), dayMs);
      add(i % 3 === 2 ? `src/new-g${generation}/${rng.pick(WORDS)}-${i}.ts` : `data/orders/new-g${generation}/${rng.hex(16)}.json`, Buffer.from(text, 'latin1'));
      left -= text.length;
    }
  }

  // Deleted: about 0.5% of the small files, one media file and the oldest log of one service.
  {
    const remove = (f) => {
      if (touched.has(f.full) || !existsSync(f.full)) return;
      unlinkSync(f.full);
      report.deletedFiles++;
      report.deletedBytes += f.size;
    };
    const small = shuffled(group('', (f) => f.rel.startsWith('src/') || f.rel.startsWith('data/')));
    for (const f of small.slice(0, Math.ceil(small.length * 0.005))) remove(f);
    const media = shuffled(group('media/', (f) => !touched.has(f.full)));
    if (media[0]) remove(media[0]);
    const logs = group('logs/', (f) => !touched.has(f.full));
    if (logs[0]) remove(logs[0]);
  }

  report.changedFiles = touched.size;
  report.changedBytes = report.appended + report.rewritten + report.inserted + report.added;
  report.changedPercent = Number(((100 * report.changedBytes) / total).toFixed(2));
  writeFileSync(join(root, STATE_FILE), `${JSON.stringify({ ...state, mutations: generation }, null, 2)}\n`);
  return report;
}

function parseArgs(argv) {
  const [command, dir, ...rest] = argv;
  const opts = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === '--force') opts.force = true;
    else if (a.startsWith('--')) opts[a.slice(2)] = rest[++i];
    else throw new Error(`unexpected argument ${a}`);
  }
  return { command, dir, opts };
}

async function main() {
  const { command, dir, opts } = parseArgs(process.argv.slice(2));
  const usage = 'usage: corpus.mjs generate DIR [--size 1G] [--seed 1] [--force] | mutate DIR [--percent 2] [--seed 1]';
  if (process.argv.slice(2).some((a) => a === '--help' || a === '-h')) {
    console.log(usage);
    return;
  }
  if (!dir || dir.startsWith('-') || !['generate', 'mutate'].includes(command)) {
    console.error(usage);
    process.exit(2);
  }
  const seed = Number(opts.seed ?? 1);
  if (command === 'generate') {
    if (existsSync(dir) && readdirSync(dir).length) {
      if (!opts.force) {
        console.error(`${dir} is not empty; remove it or pass --force to replace it`);
        process.exit(2);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    const result = generateCorpus(dir, { size: parseSize(opts.size ?? '1G'), seed });
    console.log(JSON.stringify(result));
  } else {
    console.log(JSON.stringify(mutateCorpus(dir, { percent: Number(opts.percent ?? 2), seed })));
  }
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  main().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}


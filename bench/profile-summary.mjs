#!/usr/bin/env node
// Top functions by self time in V8 .cpuprofile files (node --cpu-prof writes one per thread), optionally split
// into time windows (the benchmark's phases: sample times and process.hrtime are both CLOCK_MONOTONIC, in µs).
//   node bench/profile-summary.mjs FILE.cpuprofile... [--top 20]
import { readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';

/** node --cpu-prof names files CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; thread 0 is the main thread. */
function threadOf(file) {
  const m = /\.(\d+)\.(\d+)\.(\d+)\.cpuprofile$/.exec(basename(file));
  return m ? (m[2] === '0' ? 'main thread' : `worker thread ${m[2]}`) : basename(file);
}

function frameKey(f) {
  const where = f.url ? `${f.url.replace(/^file:\/\/.*?\/(agent|shared|server|node_modules)\//, '$1/').replace(/node_modules\/\.pnpm\/[^/]+\/node_modules\//, '')}:${f.lineNumber + 1}` : '';
  return `${f.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
}

/**
 * Self time per function, per window ({ label, startUs, endUs }; without windows: the whole profile). Idle time
 * is left out: what remains is the time the thread was busy.
 */
export function summarizeProfile(file, { top = 20, windows } = {}) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const spans = windows?.length ? windows : [{ label: 'whole run', startUs: -Infinity, endUs: Infinity }];
  const acc = spans.map(() => ({ busy: 0, self: new Map() }));
  let t = profile.startTime;
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const dt = Math.max(0, deltas[i + 1] ?? 0);
    t += Math.max(0, deltas[i] ?? 0);
    const node = byId.get(samples[i]);
    if (node.callFrame.functionName === '(idle)') continue;
    const w = spans.findIndex((s) => t >= s.startUs && t <= s.endUs);
    if (w < 0) continue;
    const key = frameKey(node.callFrame);
    acc[w].busy += dt;
    acc[w].self.set(key, (acc[w].self.get(key) ?? 0) + dt);
  }
  return {
    file: basename(file),
    thread: threadOf(file),
    windows: spans.map((s, i) => ({
      label: s.label,
      busySeconds: acc[i].busy / 1e6,
      wallSeconds: Number.isFinite(s.endUs - s.startUs) ? (s.endUs - s.startUs) / 1e6 : null,
      rows: [...acc[i].self.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, top)
        .map(([fn, us]) => ({ fn, seconds: us / 1e6, percent: acc[i].busy ? (100 * us) / acc[i].busy : 0 })),
    })),
  };
}

export function profileMarkdown(summary) {
  const out = [];
  for (const w of summary.windows) {
    if (!w.busySeconds) continue;
    out.push(`${summary.thread}, ${w.label}: busy ${w.busySeconds.toFixed(1)} s${w.wallSeconds ? ` of ${w.wallSeconds.toFixed(1)} s wall` : ''}`, '', '| self s | % of busy | function |', '|---:|---:|---|');
    for (const r of w.rows) out.push(`| ${r.seconds.toFixed(2)} | ${r.percent.toFixed(1)} | \`${r.fn}\` |`);
    out.push('');
  }
  return out.join('\n');
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--top');
  const top = i >= 0 ? Number(args.splice(i, 2)[1]) : 20;
  for (const file of args) console.log(profileMarkdown(summarizeProfile(file, { top })));
}

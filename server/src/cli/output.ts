import { stringify as toYaml } from 'yaml';
import {
  formatBytes,
  formatDuration,
  stepKind,
  type AgentView,
  type DrillView,
  type JobView,
  type PlanView,
  type SnapshotView,
  type PruneReport,
  type StatsView,
  type VerifyReport,
} from '@lifeboat/shared';

/** Where the CLI writes: process.stdout/stderr in real use, buffers in tests. */
export interface Sink {
  write(text: string): unknown;
  isTTY?: boolean;
}

/** Writes whole lines, so callers never forget the newline. */
export class Printer {
  constructor(private readonly sink: Sink) {}

  get isTTY(): boolean {
    return this.sink.isTTY === true;
  }

  line(text = ''): void {
    this.sink.write(text + '\n');
  }

  lines(texts: readonly string[]): void {
    for (const text of texts) this.line(text);
  }

  /** Raw text, for progress lines redrawn in place. */
  raw(text: string): void {
    this.sink.write(text);
  }

  /** Pretty JSON for `--json`: what scripts read, so it is the API's own shape. */
  json(value: unknown): void {
    this.line(JSON.stringify(value, null, 2));
  }
}

/** Columns padded to their widest cell; the last one is left ragged so lines carry no trailing blanks. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const render = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [render(headers), ...rows.map(render)];
}

/** "key   value" lines for `show` commands; absent values are left out rather than printed as "null". */
export function formatFields(fields: readonly (readonly [string, string | null | undefined])[]): string[] {
  const present = fields.filter((f): f is readonly [string, string] => f[1] !== null && f[1] !== undefined && f[1] !== '');
  const width = Math.max(0, ...present.map(([k]) => k.length));
  return present.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
}

/** ISO time without milliseconds; UTC so output does not depend on where the CLI runs. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '-';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function formatAge(iso: string | null, now: number): string {
  if (!iso) return 'never';
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return iso;
  const ms = now - then;
  return ms < 0 ? formatTime(iso) : `${formatDuration(ms)} ago`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

/** Quotes a value for a POSIX shell only when it needs it, so a pasted command works as printed. */
export function shellQuote(value: string): string {
  if (/^[A-Za-z0-9_.:/=+@%,-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** One line, for table cells: a multi-line server message must not break the columns. */
export function oneLine(text: string, max = 60): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function elapsed(from: string | null, to: string | null): number | null {
  if (!from || !to) return null;
  const ms = Date.parse(to) - Date.parse(from);
  return Number.isNaN(ms) || ms < 0 ? null : ms;
}

// ── agents ────────────────────────────────────────────────────────────────────

function agentState(agent: AgentView): string {
  if (agent.revokedAt) return 'revoked';
  return agent.online ? 'online' : 'offline';
}

function formatLabels(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
  return pairs.length ? pairs.join(',') : '-';
}

export function agentTable(agents: readonly AgentView[], now: number): string[] {
  return formatTable(
    ['NAME', 'STATE', 'HOSTNAME', 'VERSION', 'LABELS', 'LAST SEEN'],
    agents.map((a) => [
      a.name,
      agentState(a),
      a.hostname || '-',
      a.version ?? '-',
      formatLabels(a.labels),
      a.online ? 'now' : formatAge(a.lastSeenAt, now),
    ]),
  );
}

// ── plans ─────────────────────────────────────────────────────────────────────

export function planTable(plans: readonly PlanView[]): string[] {
  return formatTable(
    ['ID', 'AGENT', 'SCHEDULE', 'RPO', 'STEPS', 'UPDATED'],
    plans.map(({ plan, updatedAt }) => [
      plan.id,
      plan.agent,
      plan.schedule ? plan.schedule + (plan.timezone ? ` (${plan.timezone})` : '') : 'manual',
      plan.rpo ?? '-',
      plan.steps ? plan.steps.map(stepKind).join(',') : `recipe:${plan.recipe!.name}`,
      formatTime(updatedAt),
    ]),
  );
}

/** The plan as YAML, in the shape `plan apply` reads, with the catalog's dates as comments. */
export function planYaml(view: PlanView): string[] {
  const header = [`# plan ${view.plan.id}: created ${formatTime(view.createdAt)}, updated ${formatTime(view.updatedAt)}`];
  return [...header, ...toYaml({ plans: [view.plan] }).trimEnd().split('\n')];
}

export function applySummary(result: { created: string[]; updated: string[]; unchanged: string[] }): string[] {
  const lines = [
    ...result.created.map((id) => `created    ${id}`),
    ...result.updated.map((id) => `updated    ${id}`),
    ...result.unchanged.map((id) => `unchanged  ${id}`),
  ];
  lines.push(`${result.created.length} created, ${result.updated.length} updated, ${result.unchanged.length} unchanged`);
  return lines;
}

// ── jobs ──────────────────────────────────────────────────────────────────────

/** The one-cell outcome of a job: its snapshot, its error, or where it is. */
function jobResult(job: JobView): string {
  if (job.error) return oneLine(`${job.error.code}: ${job.error.message}`);
  if (job.snapshotId) return job.snapshotId;
  if (job.progress) return oneLine(`${job.progress.phase} ${formatBytes(job.progress.bytes)}`);
  return '-';
}

export function jobTable(jobs: readonly JobView[]): string[] {
  return formatTable(
    ['ID', 'KIND', 'PLAN', 'AGENT', 'STATUS', 'CREATED', 'DURATION', 'RESULT'],
    jobs.map((job) => {
      const took = elapsed(job.startedAt, job.finishedAt);
      return [
        job.id,
        job.kind,
        job.planId ?? '-',
        job.agentName,
        job.status,
        formatTime(job.createdAt),
        took === null ? '-' : formatDuration(took),
        jobResult(job),
      ];
    }),
  );
}

function progressText(progress: NonNullable<JobView['progress']>): string {
  const total = progress.totalBytes;
  const amount = total ? `${formatBytes(progress.bytes)} of ${formatBytes(total)} (${percent(progress.bytes, total)})` : formatBytes(progress.bytes);
  return `${progress.phase}, ${amount} at ${formatTime(progress.at)}`;
}

function percent(part: number, total: number): string {
  return `${Math.min(100, Math.floor((part / total) * 100))}%`;
}

function indentBlock(title: string, items: readonly string[], bullet: string): string[] {
  if (items.length === 0) return [];
  return [`${title}:`, ...items.flatMap((item) => item.split('\n').map((l, i) => `  ${i === 0 ? bullet : ' '.repeat(bullet.length)}${l}`))];
}

export function jobDetails(job: JobView): string[] {
  const took = elapsed(job.startedAt, job.finishedAt);
  const fields = formatFields([
    ['job', job.id],
    ['kind', job.kind],
    ['plan', job.planId],
    ['agent', job.agentName],
    ['status', job.status],
    ['trigger', job.trigger],
    ['created', formatTime(job.createdAt)],
    ['started', job.startedAt && formatTime(job.startedAt)],
    ['finished', job.finishedAt && formatTime(job.finishedAt) + (took === null ? '' : ` (took ${formatDuration(took)})`)],
    ['progress', job.progress && progressText(job.progress)],
    ['snapshot', job.snapshotId],
    ['error', job.error && `${job.error.code}: ${job.error.message}`],
  ]);
  return [
    ...fields,
    ...indentBlock(`warnings (${job.warnings.length})`, job.warnings, '- '),
    ...indentBlock('summary', job.summary ? [job.summary] : [], ''),
  ];
}

/** Follows a job's progress between polls: the rate is measured between the server's progress stamps. */
export class ProgressTracker {
  private last: { phase: string; bytes: number; at: number } | null = null;
  private rate: number | null = null;

  constructor(private readonly startedAt: number) {}

  line(job: JobView, now: number): string {
    this.observe(job);
    const waited = formatDuration(Math.max(0, now - this.startedAt));
    const parts = [`${job.id} ${job.status}`];
    if (job.progress) parts.push(this.describe(job.progress));
    else if (job.status === 'queued') parts.push('waiting for the agent');
    return `${parts.join(': ')} (${waited})`;
  }

  private describe(progress: NonNullable<JobView['progress']>): string {
    const total = progress.totalBytes;
    let text = `${progress.phase} ${formatBytes(progress.bytes)}`;
    if (total) text += ` of ${formatBytes(total)} (${percent(progress.bytes, total)})`;
    if (this.rate !== null) text += `, ${formatRate(this.rate)}`;
    return text;
  }

  private observe(job: JobView): void {
    const p = job.progress;
    if (!p) return;
    const at = Date.parse(p.at);
    if (Number.isNaN(at)) return;
    const prev = this.last;
    if (!prev || prev.phase !== p.phase || p.bytes < prev.bytes) {
      // A new phase counts its bytes afresh; a rate across phases would mean nothing.
      this.rate = null;
      this.last = { phase: p.phase, bytes: p.bytes, at };
      return;
    }
    if (at > prev.at) {
      this.rate = ((p.bytes - prev.bytes) * 1000) / (at - prev.at);
      this.last = { phase: p.phase, bytes: p.bytes, at };
    }
  }
}

/** How a finished job ended, for `backup now --wait` and `restore`. */
export function jobOutcome(job: JobView): { ok: boolean; lines: string[] } {
  const took = elapsed(job.startedAt, job.finishedAt);
  const tookText = took === null ? '' : ` in ${formatDuration(took)}`;
  const warnings = job.warnings.map((w) => `warning: ${w}`);
  const summary = job.summary ? job.summary.split('\n') : [];
  if (job.status === 'succeeded') {
    const what = job.snapshotId ? `: snapshot ${job.snapshotId}` : '';
    return { ok: true, lines: [`${job.kind} ${job.id} succeeded${tookText}${what}`, ...summary, ...warnings] };
  }
  const reason = job.error ? `${job.error.code}: ${job.error.message}` : 'no reason given';
  return { ok: false, lines: [`${job.kind} ${job.id} ${job.status}${tookText}: ${reason}`, ...summary, ...warnings] };
}

// ── snapshots ─────────────────────────────────────────────────────────────────

export function snapshotTable(snapshots: readonly SnapshotView[]): string[] {
  return formatTable(
    ['ID', 'PLAN', 'AGENT', 'TIME', 'SIZE', 'STATUS', 'DURATION'],
    snapshots.map((s) => [s.id, s.planId, s.agentName, formatTime(s.createdAt), formatBytes(s.size), s.status, formatDuration(s.durationMs)]),
  );
}

function artifactContents(metadata: SnapshotView['artifacts'][number]['metadata']): string {
  // One branch per metadata kind; a new source adds its own description here.
  switch (metadata.kind) {
    case 'files':
      return `${metadata.files} files, ${metadata.directories} directories, ${metadata.symlinks} symlinks (${formatBytes(metadata.fileBytes)}) from ${metadata.paths.join(', ')}`;
    case 'postgres':
      return `PostgreSQL ${metadata.serverVersion} database ${metadata.database}: ${metadata.tables.length} tables, ${rowTotal(metadata.tables)} rows (pg_dump ${metadata.dumpVersion}, custom format)`;
    case 'postgres-globals':
      return `PostgreSQL ${metadata.serverVersion} roles and tablespaces: ${metadata.roles.length} roles`;
    case 'mysql':
      return `${metadata.dumpTool} ${metadata.dumpVersion} of ${metadata.databases.map((d) => `${d.name} (${d.tables.length} tables, ${rowTotal(d.tables)} rows)`).join(', ')} from server ${metadata.serverVersion}`;
    case 'sqlite':
      return `SQLite ${metadata.path}: ${metadata.tables.length} tables, ${rowTotal(metadata.tables)} rows, integrity ${metadata.integrity}`;
    case 'command':
      return `output of ${metadata.program} (${metadata.name})`;
  }
}

function rowTotal(tables: readonly { rows: number }[]): number {
  return tables.reduce((n, t) => n + t.rows, 0);
}

export function snapshotDetails(snapshot: SnapshotView): string[] {
  const fields = formatFields([
    ['snapshot', snapshot.id],
    ['plan', snapshot.planId],
    ['agent', snapshot.agentName],
    ['job', snapshot.jobId],
    ['status', snapshot.status],
    ['started', formatTime(snapshot.startedAt)],
    ['created', formatTime(snapshot.createdAt)],
    ['duration', formatDuration(snapshot.durationMs)],
    ['size', formatBytes(snapshot.size)],
  ]);
  const artifacts = snapshot.artifacts.flatMap((a) => [
    `  [${a.step}] ${a.kind} ${a.name}: ${formatBytes(a.size)} in ${a.chunkCount} chunk${a.chunkCount === 1 ? '' : 's'}`,
    ...formatFields([
      ['id', a.id],
      ['sha256', a.sha256],
      ['contents', artifactContents(a.metadata)],
    ]).map((l) => `      ${l}`),
  ]);
  return [...fields, `artifacts (${snapshot.artifacts.length}):`, ...artifacts];
}

// ── stats ─────────────────────────────────────────────────────────────────────

function formatRatio(ratio: number | null): string {
  return ratio === null ? '-' : `${ratio.toFixed(2)}x`;
}

/** Per plan, then the total; notes say what the figures mean where they could mislead. */
export function statsTable(stats: StatsView): string[] {
  const row = (name: string, f: StatsView['total']) => [
    name,
    String(f.snapshots),
    formatBytes(f.bytesIn),
    String(f.uniqueChunks),
    formatBytes(f.bytesStored),
    formatRatio(f.dedupRatio),
  ];
  const lines = formatTable(
    ['PLAN', 'SNAPSHOTS', 'BYTES IN', 'CHUNKS', 'BYTES STORED', 'RATIO'],
    [...stats.plans.map((p) => row(p.planId, p)), row('TOTAL', stats.total)],
  );
  lines.push('', 'bytes in: the snapshots\' sizes added up; bytes stored: the distinct chunks they reference, compressed (and encrypted); ratio: bytes in / bytes stored.');
  if (stats.plans.length > 1) lines.push('A chunk several plans share counts in each of those plans and once in the total.');
  const unrecorded = stats.total.chunksWithoutStoredSize;
  if (unrecorded > 0) {
    lines.push(`${unrecorded} of ${stats.total.uniqueChunks} chunks are in no pack's index (their pack index object is missing or damaged): they count at their plain size, so bytes stored is approximate.`);
  }
  return lines;
}

// ── retention, verification, drills ──────────────────────────────────────────

export function pruneLines(report: PruneReport): string[] {
  const lines: string[] = [];
  for (const plan of report.plans) {
    lines.push(`plan ${plan.planId}: keep ${plan.keep.length}, remove ${plan.remove.length}`);
    for (const d of plan.keep) lines.push(`  keep    ${d.id}  ${d.reasons.join('; ')}`);
    for (const d of plan.remove) lines.push(`  remove  ${d.id}  ${d.reasons.join('; ')}`);
  }
  const gc = report.gc;
  lines.push(
    report.dryRun
      ? `dry run: nothing removed; ${gc.deleted} unreferenced chunk(s) would be collected (${formatBytes(gc.bytesFreed)}: ${gc.packsDeleted} pack(s) deleted, ${gc.packsRewritten} rewritten), ${gc.spared} spared (grace period, in use, or in a pack not worth rewriting yet)`
      : `removed ${report.removed} snapshot(s); collected ${gc.deleted} chunk(s), ${formatBytes(gc.bytesFreed)} freed (${gc.packsDeleted} pack(s) deleted, ${gc.packsRewritten} rewritten); spared ${gc.spared}, ${gc.referenced} still referenced`,
  );
  return lines;
}

export function verifyLines(report: VerifyReport): string[] {
  const head = `checked ${report.chunks} chunk(s) of ${report.snapshots} snapshot(s)${report.readData ? ', reading their data' : ' (existence only; --read-data reads them)'}`;
  if (report.problems.length === 0) return [head, 'no problems found'];
  return [
    head,
    `${report.problems.length} damaged or missing chunk(s):`,
    ...report.problems.map((p) => `  ${p.chunkId}: ${p.problem} — breaks ${p.snapshots.join(', ') || 'no snapshot'}`),
    `marked damaged: ${report.damaged.join(', ')}`,
  ];
}

export function drillTable(drills: readonly DrillView[]): string[] {
  return formatTable(
    ['ID', 'PLAN', 'SNAPSHOT', 'AGENT', 'STATUS', 'RESTORE TIME', 'CHECKS', 'WHEN'],
    drills.map((d) => [
      d.id,
      d.planId,
      d.snapshotId,
      d.agentName ?? '-',
      d.status,
      d.restoreMs === null ? '-' : formatDuration(d.restoreMs),
      d.checks.length ? `${d.checks.filter((c) => c.ok).length}/${d.checks.length}` : '-',
      formatTime(d.createdAt),
    ]),
  );
}

export function drillDetails(drill: DrillView): string[] {
  return [
    `drill ${drill.id}: ${drill.status}`,
    `  plan ${drill.planId}, snapshot ${drill.snapshotId}, agent ${drill.agentName ?? '-'}, ${drill.trigger}`,
    `  restore time (RTO): ${drill.restoreMs === null ? '-' : formatDuration(drill.restoreMs)}, ${drill.bytesRestored === null ? '-' : formatBytes(drill.bytesRestored)} restored`,
    ...drill.checks.map((c) => `  ${c.ok ? 'PASS' : 'FAIL'}  ${c.name}: ${c.detail}`),
    ...(drill.error ? [`  error: ${drill.error}`] : []),
  ];
}

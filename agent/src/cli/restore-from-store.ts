import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createLogger, DirTarget, formatBytes, LifeboatError, listIssues, RestoreTarget, type StoreBackend } from '@lifeboat/shared';
import { databaseTarget, listStoreSnapshots, restoreFromStore } from '../restore-from-store.js';
import type { JobContext } from '../sources/source.js';

/** `lifeboat-agent restore-from-store`: flags in, lines out (results on stdout, progress and remarks on stderr). */
export interface RestoreFromStoreFlags {
  store: string;
  list?: boolean;
  json?: boolean;
  snapshot?: string;
  to?: string;
  toPostgres?: string;
  toMysql?: string;
  passwordFile?: string;
  passphraseFile?: string;
  force?: boolean;
  artifact: number[];
  rewriteHost: { from: string; to: string }[];
}

export interface CommandIo {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Opens the store (the S3 client loads only for an s3:// spec). */
  openStore?: (spec: string) => Promise<StoreBackend>;
  signal?: AbortSignal;
}

export async function restoreFromStoreCommand(flags: RestoreFromStoreFlags, io: CommandIo): Promise<number> {
  const store = await (io.openStore ?? openStoreSpec)(flags.store);
  if (flags.list) {
    if (flags.snapshot || flags.to || flags.toPostgres || flags.toMysql) throw new LifeboatError('bad_request', '--list lists the snapshots; leave out --snapshot and the targets');
    const { snapshots, damaged } = await listStoreSnapshots(store);
    if (flags.json) io.out(JSON.stringify({ snapshots, damaged }, null, 2));
    else if (snapshots.length === 0) io.err(`the store at ${flags.store} holds no snapshots`);
    else for (const line of snapshotTable(snapshots)) io.out(line);
    for (const d of damaged) io.err(`damaged manifest ${d.key}: ${d.problems.join('; ')}`);
    return 0;
  }
  if (!flags.snapshot) throw new LifeboatError('bad_request', 'give the snapshot to restore with --snapshot ID (see --list)');
  const targets = restoreTargets(flags);
  const passphrase = flags.passphraseFile ? await readPassphrase(flags.passphraseFile, io) : null;

  const ctx = progressContext(`local-${flags.snapshot}`, io, io.signal ?? interruptSignal());
  const started = Date.now();
  const result = await restoreFromStore({
    store,
    snapshotId: flags.snapshot,
    targets,
    passphrase,
    artifacts: flags.artifact,
    rewriteHosts: flags.rewriteHost,
    // As a normal restore: recorded owners where the restoring user can set them.
    preserveOwner: process.getuid?.() === 0,
    ctx,
  });
  for (const remark of result.remarks) io.err(`note: ${remark}`);
  const m = result.manifest;
  io.out(`restored snapshot ${m.snapshotId} of plan ${m.planId} (taken ${m.createdAt}) in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  for (const summary of result.summaries) io.out(summary);
  if (result.skipped.length) io.out(`skipped ${result.skipped.length} entr${result.skipped.length === 1 ? 'y' : 'ies'}: ${result.skipped.slice(0, 20).join('; ')}`);
  return 0;
}

function restoreTargets(flags: RestoreFromStoreFlags): RestoreTarget[] {
  if (!flags.to && !flags.toPostgres && !flags.toMysql) throw new LifeboatError('bad_request', 'give where to restore: --to DIR, --to-postgres URL and/or --to-mysql URL');
  if (flags.passwordFile && !flags.toPostgres && !flags.toMysql) throw new LifeboatError('bad_request', '--password-file goes with --to-postgres or --to-mysql');
  const force = flags.force === true;
  const passwordFile = flags.passwordFile ? resolve(flags.passwordFile) : undefined;
  const candidates = [
    ...(flags.to ? [DirTarget.safeParse({ kind: 'dir', path: resolve(flags.to), force })] : []),
    ...(flags.toPostgres ? [RestoreTarget.safeParse(databaseTarget('postgres', flags.toPostgres, passwordFile, force))] : []),
    ...(flags.toMysql ? [RestoreTarget.safeParse(databaseTarget('mysql', flags.toMysql, passwordFile, force))] : []),
  ];
  const problems = candidates.flatMap((c) => (c.success ? [] : listIssues(c.error)));
  if (problems.length) throw new LifeboatError('bad_request', 'invalid restore target:', problems);
  return candidates.flatMap((c) => (c.success ? [c.data] : []));
}

async function readPassphrase(file: string, io: CommandIo): Promise<string> {
  try {
    if ((await stat(file)).mode & 0o077) io.err(`note: ${file} is readable by other users; chmod 600 it`);
    return (await readFile(file, 'utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    throw new LifeboatError('bad_request', `cannot read the passphrase file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** A directory (relative is fine here) or s3://…; a directory that does not exist is refused, never created. */
async function openStoreSpec(spec: string): Promise<StoreBackend> {
  const { openStore } = await import('@lifeboat/shared/store/open-store');
  if (spec.startsWith('s3://')) return openStore(spec);
  const root = resolve(spec);
  const info = await stat(root).catch(() => null);
  if (!info?.isDirectory()) throw new LifeboatError('not_found', `there is no store directory at ${root}`);
  return openStore(root);
}

function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort(new LifeboatError('cancelled', 'interrupted (SIGINT); what was restored so far is incomplete')));
  return controller.signal;
}

/** A job context for a restore run by hand: warnings and progress (about every 2 s) on stderr. */
function progressContext(jobId: string, io: CommandIo, signal: AbortSignal): JobContext {
  let lastAt = 0;
  return {
    jobId,
    signal,
    log: createLogger('restore-from-store'),
    warn: (message) => io.err(`warning: ${message}`),
    progress: (phase, bytes, total) => {
      // Reading and extracting report in turns: one line every 2 s whatever the phase, and each artifact's end.
      const now = Date.now();
      const finished = total !== undefined && bytes >= total;
      if (now - lastAt < 2000 && !finished) return;
      lastAt = now;
      const amount = total ? `${formatBytes(bytes)} of ${formatBytes(total)} (${total > 0 ? Math.floor((bytes / total) * 100) : 100}%)` : formatBytes(bytes);
      io.err(`${phase}: ${amount}`);
    },
  };
}

function snapshotTable(snapshots: Awaited<ReturnType<typeof listStoreSnapshots>>['snapshots']): string[] {
  const rows = [
    ['SNAPSHOT', 'PLAN', 'AGENT', 'TIME', 'SIZE', 'ARTIFACTS'],
    ...snapshots.map((s) => [
      s.snapshotId,
      s.planId,
      s.agentId,
      s.createdAt.replace(/\.\d{3}Z$/, 'Z'),
      formatBytes(s.size),
      s.artifacts.map((a) => `[${a.step}] ${a.kind} ${a.name}`).join('; '),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
}

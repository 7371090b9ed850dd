import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, lstat, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { formatBytes, LifeboatError, parseDuration, type ArtifactMetadata, type CommandStepOptions, type DirTarget } from '@lifeboat/shared';
import { childEnv, DEFAULT_KILL_GRACE_MS, streamChild } from '../child.js';
import { abortReason, fsReason, isCode, shown, throttled } from '../fs-errors.js';
import { prepareTarget } from '../restore/target.js';
import type { BackupStream, JobContext, RestoreOptions, RestoreSummary, Source } from './source.js';

/**
 * The command source: any program whose standard output is the dump (mongodump --archive, redis-cli --rdb -,
 * a script), run without a shell in a sanitized environment (child.ts); its exit code, signal, timeout and
 * output size decide whether the artifact is complete. Restored as `<name>.out` into a directory.
 *
 * Also home of restoreAsFile, which every source that restores "one dump file into a directory" can use.
 */

type CommandMetadata = Extract<ArtifactMetadata, { kind: 'command' }>;

export interface CommandSourceSettings {
  /** SIGTERM, then SIGKILL this long after, when the command is stopped (timeout, cancel). */
  killGraceMs: number;
}

export function createCommandSource(settings: Partial<CommandSourceSettings> = {}): Source<CommandStepOptions> {
  const s: CommandSourceSettings = { killGraceMs: DEFAULT_KILL_GRACE_MS, ...settings };
  return {
    kind: 'command',
    targets: ['dir'],
    backup: (options, ctx) => backupCommand(options, ctx, s),
    // A source is only given one of its `targets`.
    restore: (input, target, options, ctx) => restoreCommand(input, target as DirTarget, options, ctx),
  };
}

export const commandSource: Source<CommandStepOptions> = createCommandSource();

async function backupCommand(options: CommandStepOptions, ctx: JobContext, s: CommandSourceSettings): Promise<BackupStream> {
  if (ctx.signal.aborted) throw abortReason(ctx.signal);
  const [program, ...args] = options.run;
  if (program === undefined) throw new LifeboatError('bad_request', `command "${options.name}" has no program to run (plan step command.run is empty)`);
  const timeoutMs = parseDuration(options.timeout);
  if (timeoutMs === null) throw new LifeboatError('bad_request', `command "${options.name}" has an invalid timeout "${options.timeout}"`);
  if (options.cwd !== undefined) await checkWorkingDirectory(options.name, options.cwd);

  const tool = `command "${options.name}"`;
  const output = streamChild({
    tool,
    program,
    args,
    cwd: options.cwd,
    env: childEnv(),
    timeoutMs,
    signal: ctx.signal,
    killGraceMs: s.killGraceMs,
    onBytes: throttled((bytes) => ctx.progress('running command', bytes)),
  });
  const metadata = output.done.then((result): CommandMetadata => {
    ctx.progress('running command', result.bytes);
    // Many dump tools log their progress to stderr: worth keeping, not a warning (DESIGN §11).
    if (result.stderr) ctx.log.info(`${tool} succeeded; the end of its stderr: ${result.stderr.slice(-1000)}`);
    return { kind: 'command', name: options.name, program: path.posix.basename(program), exitCode: 0 };
  });
  // The consumer reads `metadata` after the stream; a failure before then must not be an unhandled rejection.
  metadata.catch(() => {});
  return { kind: 'command', name: options.name, stream: output.stream, metadata };
}

/** Spawn reports a missing cwd as a missing program; say which it is before anything runs. */
async function checkWorkingDirectory(name: string, cwd: string): Promise<void> {
  const info = await stat(cwd).catch((err: unknown) => {
    if (isCode(err, 'ENOENT') || isCode(err, 'ENOTDIR')) {
      throw new LifeboatError('path_not_found', `working directory ${shown(cwd)} of command "${name}" does not exist on this agent (plan step command.cwd)`);
    }
    throw new LifeboatError('source_failed', `cannot use working directory ${shown(cwd)} of command "${name}": ${fsReason(err)}`);
  });
  if (!info.isDirectory()) throw new LifeboatError('source_failed', `working directory ${shown(cwd)} of command "${name}" is not a directory (plan step command.cwd)`);
}

async function restoreCommand(input: Readable, target: DirTarget, options: RestoreOptions, ctx: JobContext): Promise<RestoreSummary> {
  const recorded = options.artifact?.metadata.kind === 'command' ? options.artifact.metadata : null;
  const name = recorded?.name ?? options.artifact?.name ?? 'command';
  // The name came from the store: it becomes a file name only if it is the SafeName the plan allowed.
  const fileName = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(name) ? `${name}.out` : 'command.out';
  const written = await restoreAsFile(input, target, fileName, ctx, { expectedBytes: options.artifact?.size });
  const program = recorded ? ` (made by ${recorded.program})` : '';
  return {
    summary:
      `wrote the output of command "${name}"${program} to ${written.path} (${formatBytes(written.bytes)}); ` +
      `to restore it, run the plan step's command.restore (or the tool's own restore program) with the file on standard input: RESTORE-COMMAND < ${shellQuoted(written.path)}`,
    skipped: [],
  };
}

/** A path as it would be typed in a shell, for a hint people copy. */
function shellQuoted(p: string): string {
  return /^[A-Za-z0-9_./-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`;
}

export interface RestoreAsFileOptions<T> {
  /** The artifact's recorded size: a file of another size is a failed restore. */
  expectedBytes?: number;
  /** Names that must not exist beside the file, as suffixes of its name (an old SQLite "-wal" would be replayed into it). */
  refuseBeside?: readonly string[];
  /** Checks the complete file before it takes its name; a rejection fails the restore and removes the file. */
  verify?: (file: string) => Promise<T>;
}

export interface RestoredFile<T> {
  path: string;
  bytes: number;
  verified: T | undefined;
}

/**
 * Restores an artifact as one file in a directory target (prepareTarget's empty/force rule): written under a
 * temporary name (0600, fsync'd), checked (`verify`), then renamed to `fileName`, so the name never holds a
 * partial or unverified file. Whatever fails, the temporary file is removed and `input` destroyed.
 */
export async function restoreAsFile<T = undefined>(
  input: Readable,
  target: DirTarget,
  fileName: string,
  ctx: JobContext,
  options: RestoreAsFileOptions<T> = {},
): Promise<RestoredFile<T>> {
  let partial: string | null = null;
  try {
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    if (fileName === '.' || fileName === '..' || !/^[^/\0-\x1f\x7f]{1,255}$/.test(fileName)) {
      throw new LifeboatError('restore_failed', `cannot restore into a file named ${JSON.stringify(fileName)}`);
    }
    const prepared = await prepareTarget(target);
    const final = path.posix.join(prepared.root, fileName);
    await refuseExisting(final, options.refuseBeside ?? []);
    partial = path.posix.join(prepared.root, `.lifeboat-partial-${randomBytes(6).toString('hex')}`);
    let bytes = 0;
    const report = throttled((n) => ctx.progress('writing', n, options.expectedBytes));
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        report(bytes);
        callback(null, chunk);
      },
    });
    await pipeline(input, counter, createWriteStream(partial, { flags: 'wx', mode: 0o600 }), { signal: ctx.signal });
    ctx.progress('writing', bytes, options.expectedBytes);
    await syncPath(partial);
    if (options.expectedBytes !== undefined && bytes !== options.expectedBytes) {
      throw new LifeboatError('restore_failed', `received ${bytes} bytes for ${fileName}, but the artifact holds ${options.expectedBytes}`);
    }
    const verified = options.verify ? await options.verify(partial) : undefined;
    await rename(partial, final);
    partial = null;
    await syncPath(prepared.root);
    // Kept 0700 while being filled, so no one else could plant anything in it meanwhile.
    if (prepared.created) await chmod(prepared.root, 0o755);
    return { path: final, bytes, verified };
  } catch (err) {
    input.destroy();
    throw restoreFailure(err, ctx.signal);
  } finally {
    if (partial !== null) await rm(partial, { force: true });
  }
}

async function refuseExisting(final: string, besides: readonly string[]): Promise<void> {
  const existing = await lstat(final).catch(() => null);
  if (existing && !existing.isFile()) throw new LifeboatError('restore_refused', `restore target ${shown(final)} exists and is not a regular file`);
  for (const suffix of besides) {
    if (await lstat(final + suffix).catch(() => null)) {
      throw new LifeboatError('restore_refused', `${shown(final + suffix)} exists beside the file being restored and would be mixed into it; move it away first`);
    }
  }
}

async function syncPath(p: string): Promise<void> {
  const handle = await open(p, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function restoreFailure(err: unknown, signal: AbortSignal): LifeboatError {
  if (signal.aborted) return abortReason(signal);
  if (err instanceof LifeboatError) return err;
  if (isCode(err, 'ERR_STREAM_PREMATURE_CLOSE')) return new LifeboatError('restore_failed', 'the artifact stream ended before it was complete');
  return new LifeboatError('restore_failed', `writing the restored file failed: ${fsReason(err)}`);
}

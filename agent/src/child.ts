import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { formatBytes, formatDuration, LifeboatError, redact, type ErrorCode } from '@lifeboat/shared';
import { abortReason } from './fs-errors.js';

/**
 * Running a dump tool (or any program) as a child process whose output is either an artifact (streamChild)
 * or a short answer (runChild), so that no failure can pass for a success.
 *
 * The contract, for every source that runs a tool:
 * - **No shell.** `program` and `args` go to spawn as an argument array. Callers validate what they put in
 *   `args` (no leading "-" where an option is not meant, DESIGN §11).
 * - **A sanitized environment** (childEnv): only harmless variables pass (PATH, HOME, locale, TZ, TMPDIR);
 *   the agent's own secrets never reach a child. `strip` removes named variables even from that list (the
 *   plan's passwordEnv); `set` adds what the child needs (PGPASSFILE).
 * - **Its own process group.** The child is spawned detached and every stop signals the whole group, so a
 *   `sh -c '… | …'` pipeline stops with its shell instead of holding our pipes open.
 * - **Stopping**: the AbortSignal (job cancelled, timed out, connection lost), `timeoutMs`, or the consumer
 *   closing the output early send SIGTERM to the group, then SIGKILL after `killGraceMs`. A child that still
 *   holds our pipes after that is abandoned (its pipes destroyed) so the verdict always arrives. Without a
 *   stop, the verdict waits for the pipes to close: a background process the child left holding stdout is
 *   waited for, up to the timeout or the job's abort.
 * - **The verdict**: success is exit code 0 and no signal, and, for streamChild, at least one byte of
 *   output (unless `allowEmpty`) and the output read to its end; with `input`, the child must also have
 *   taken all of it. Anything else is a LifeboatError with `failureCode` (default source_failed; restores pass
 *   restore_failed), except a stop by the AbortSignal, which rejects with the signal's reason (abortReason).
 * - **Messages**: `tool` names the child ("sqlite3", "pg_dump", 'command "mongodb"'); the message carries
 *   the last STDERR_TAIL_BYTES of stderr, trimmed, stripped of control characters and redacted. Never argv:
 *   nothing here logs, and Node's own spawn errors (whose text carries argv) are never passed on.
 * - stderr of a successful run is not a failure (DESIGN §11); its tail comes back in the result for the
 *   caller to log or warn about.
 */

/** How much of a child's stderr is kept for the error message: the end is where tools say why they failed. */
export const STDERR_TAIL_BYTES = 8 * 1024;
/** SIGTERM first; SIGKILL this long after, if the child is still there. */
export const DEFAULT_KILL_GRACE_MS = 5000;
/** runChild collects stdout in memory: answers to queries, not dumps. */
export const DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export interface ChildOptions {
  /** The child as people know it, used in every message: "sqlite3", "pg_dump", 'command "mongodb"'. */
  tool: string;
  /** A path or a name looked up on the child environment's PATH. */
  program: string;
  args: readonly string[];
  cwd?: string;
  /** Default: childEnv(). Give childEnv({ strip, set }) rather than process.env. */
  env?: NodeJS.ProcessEnv;
  /** Piped to the child's stdin (a restore feeding pg_restore); without it stdin is /dev/null. */
  input?: Readable;
  /** Stop the child after this long (SIGTERM, then SIGKILL). */
  timeoutMs?: number;
  /** Stop the child when this aborts; the result then rejects with the signal's reason. */
  signal?: AbortSignal;
  killGraceMs?: number;
  /** The code of the LifeboatError for a failure. Default: source_failed. */
  failureCode?: ErrorCode;
}

export interface ChildResult {
  /** Only a zero exit code is a success. */
  exitCode: 0;
  /** The tail of stderr, trimmed and redacted ("" when it printed nothing). */
  stderr: string;
}

export interface RunResult extends ChildResult {
  stdout: string;
}

export interface StreamResult extends ChildResult {
  /** Bytes of stdout delivered through `stream`. */
  bytes: number;
}

export interface ChildOutput {
  /** The child's stdout, at the consumer's pace (backpressure reaches the child through the pipe). Errors when the child fails. */
  stream: Readable;
  /**
   * Settles once the child has exited and `stream` was read to its end (or destroyed): resolves when the
   * verdict is a success, rejects with a LifeboatError otherwise. Never an unhandled rejection on its own.
   */
  done: Promise<StreamResult>;
}

/** Variables a child may inherit from the agent: what tools need to find themselves and speak the locale. */
const INHERITED = new Set(['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LANGUAGE', 'TZ', 'TMPDIR']);
const INHERITED_PATTERN = /^LC_[A-Z_]+$/;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The environment of a child: the harmless variables of the agent's own (never its secrets, nor PGPASSWORD,
 * MYSQL_PWD, AWS_* and the like), without those named in `strip`, plus `set`.
 */
export function childEnv(options: { strip?: readonly string[]; set?: Readonly<Record<string, string>>; from?: NodeJS.ProcessEnv } = {}): NodeJS.ProcessEnv {
  const from = options.from ?? process.env;
  const strip = new Set(options.strip ?? []);
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(from)) {
    if (value === undefined || strip.has(name)) continue;
    if (INHERITED.has(name) || INHERITED_PATTERN.test(name)) env[name] = value;
  }
  if (env.PATH === undefined && !strip.has('PATH')) env.PATH = DEFAULT_PATH;
  return { ...env, ...options.set };
}

/** Runs a child to completion and returns its stdout (at most `maxOutputBytes`): for queries and checks. */
export function runChild(options: ChildOptions & { maxOutputBytes?: number }): Promise<RunResult> {
  const limit = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  const chunks: Buffer[] = [];
  let size = 0;
  const run = supervise(options, (stdout, stop) => {
    stdout.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
      else stop(failure(options, `${options.tool} printed more than ${formatBytes(limit)}, more than expected`));
    });
  });
  return run.exited.then((exit) => {
    const error = verdict(options, exit);
    if (error) throw error;
    return { exitCode: 0, stderr: exit.stderr, stdout: Buffer.concat(chunks).toString('utf8') };
  });
}

/**
 * Runs a child whose stdout is an artifact. The stream ends only once the child has exited with success;
 * when it fails, the stream errors with the same LifeboatError `done` rejects with.
 */
export function streamChild(options: ChildOptions & { allowEmpty?: boolean; onBytes?: (total: number) => void }): ChildOutput {
  const output = new PassThrough({ highWaterMark: 1024 * 1024 });
  // `done` carries the verdict; the stream's error is for consumers that listen, never an agent crash.
  output.on('error', () => {});
  let bytes = 0;
  let ended = false;
  const run = supervise(options, (stdout, stop) => {
    stdout.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      options.onBytes?.(bytes);
    });
    // The end is ours to give, after the verdict: a failed child's output must not look complete.
    stdout.pipe(output, { end: false });
    output.once('close', () => {
      if (!ended) stop(failure(options, `the output of ${options.tool} was closed before ${options.tool} finished`));
    });
  });
  const done = run.exited.then(async (exit): Promise<StreamResult> => {
    let error = verdict(options, exit);
    if (!error && bytes === 0 && !options.allowEmpty) error = failure(options, `${options.tool} produced no output${stderrSuffix(exit.stderr)}`);
    if (error) {
      output.destroy(error);
      throw error;
    }
    ended = true;
    output.end();
    try {
      await finished(output);
    } catch {
      throw options.signal?.aborted
        ? abortReason(options.signal)
        : failure(options, `the output of ${options.tool} was closed before it was read to the end`);
    }
    return { exitCode: 0, stderr: exit.stderr, bytes };
  });
  done.catch(() => {});
  return { stream: output, done };
}

/** How a child ended, as far as supervise knows; verdict() turns it into a result. */
interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why we stopped it, when we did: the first reason wins. */
  stopped: StopReason | null;
  /** The child never ran. */
  spawnError: NodeJS.ErrnoException | null;
  /** With `input`: the child took all of it. */
  inputComplete: boolean;
  stderr: string;
}

type StopReason = { kind: 'aborted' } | { kind: 'timeout' } | { kind: 'failed'; error: LifeboatError };

interface Supervised {
  /** Resolves (never rejects) once the child has closed its pipes and exited, or was abandoned after SIGKILL. */
  exited: Promise<Exit>;
}

/**
 * Starts the child and watches it: stderr tail, timeout, abort, input, escalation from SIGTERM to SIGKILL.
 * `attach` wires stdout (always a pipe) and gets `stop` to end the child early with a reason of its own.
 */
function supervise(options: ChildOptions, attach: (stdout: Readable, stop: (error: LifeboatError) => void) => void): Supervised {
  const graceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  const exit: Exit = { code: null, signal: null, stopped: null, spawnError: null, inputComplete: false, stderr: '' };
  if (options.signal?.aborted) {
    exit.stopped = { kind: 'aborted' };
    return { exited: Promise.resolve(exit) };
  }

  let child: ChildProcess;
  try {
    child = spawn(options.program, [...options.args], {
      cwd: options.cwd,
      env: options.env ?? childEnv(),
      stdio: [options.input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      detached: true,
      windowsHide: true,
    });
  } catch (err) {
    // Thrown for arguments Node refuses (a NUL byte); its message would carry argv.
    exit.spawnError = Object.assign(new Error('invalid arguments'), { code: (err as NodeJS.ErrnoException).code ?? 'EINVAL' });
    return { exited: Promise.resolve(exit) };
  }

  const stderrTail = new TailBuffer(STDERR_TAIL_BYTES);
  child.stderr!.on('data', (chunk: Buffer) => stderrTail.push(chunk));

  const timers: NodeJS.Timeout[] = [];
  let settled = false;
  let inputEnded = false;
  let resolveExited: (exit: Exit) => void = () => {};
  const exited = new Promise<Exit>((resolve) => (resolveExited = resolve));
  const settle = () => {
    if (settled) return;
    settled = true;
    for (const timer of timers) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    exit.stderr = stderrTail.text();
    // All of the input went into the pipe: the child's exit status says what it made of it.
    const stdin = child.stdin;
    exit.inputComplete ||= inputEnded && stdin !== null && stdin.writableEnded && stdin.writableLength === 0;
    resolveExited(exit);
  };

  const signalGroup = (signal: NodeJS.Signals) => {
    // Once settled the child has been reaped and its pid may belong to someone else.
    if (settled || child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // The group is gone (or was never made): the child alone, if it is still there.
      child.kill(signal);
    }
  };
  const stop = (reason: StopReason) => {
    if (settled || exit.stopped) return;
    exit.stopped = reason;
    // Unread output would keep the pipe, and so the child's 'close', open for ever.
    child.stdout?.destroy();
    signalGroup('SIGTERM');
    timers.push(
      setTimeout(() => {
        signalGroup('SIGKILL');
        // Something outside the group (a daemonized grandchild) may still hold our pipes: give up on them.
        timers.push(
          setTimeout(() => {
            child.stderr?.destroy();
            settle();
          }, graceMs),
        );
      }, graceMs),
    );
  };
  const onAbort = () => stop({ kind: 'aborted' });
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.timeoutMs !== undefined) timers.push(setTimeout(() => stop({ kind: 'timeout' }), options.timeoutMs));

  child.on('error', (err: NodeJS.ErrnoException) => {
    // Spawn failures (ENOENT, EACCES) come here with no pid; a failed kill has a pid and is not a verdict.
    if (child.pid !== undefined) return;
    exit.spawnError = err;
    settle();
  });
  child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
    exit.code = code;
    exit.signal = signal;
    settle();
  });

  if (options.input && child.stdin) {
    const input = options.input;
    // Who failed first: the input (a broken download stops the child) or the child's stdin (judged by its exit).
    let blame: 'input' | 'child' | null = null;
    input.once('error', () => (blame ??= 'input'));
    input.once('end', () => (inputEnded = true));
    child.stdin.once('error', () => (blame ??= 'child'));
    pipeline(input, child.stdin).then(
      () => (exit.inputComplete = true),
      (err: unknown) => {
        if (blame === 'input') stop({ kind: 'failed', error: inputFailure(options, err) });
      },
    );
  }
  attach(child.stdout!, (error) => stop({ kind: 'failed', error }));
  return { exited };
}

/** The LifeboatError for how the child ended, or null for a success. */
function verdict(options: ChildOptions, exit: Exit): LifeboatError | null {
  const tail = stderrSuffix(exit.stderr);
  if (exit.stopped?.kind === 'aborted') return abortReason(options.signal!);
  if (exit.stopped?.kind === 'failed') return exit.stopped.error;
  if (exit.stopped?.kind === 'timeout') {
    return failure(options, `${options.tool} timed out after ${formatDuration(options.timeoutMs ?? 0)} and was stopped${tail}`);
  }
  if (exit.spawnError) return failure(options, `${options.tool} could not be started: ${spawnReason(options.program, exit.spawnError)}`);
  if (exit.signal) return failure(options, `${options.tool} was killed by ${exit.signal}${tail}`);
  if (exit.code !== 0) return failure(options, `${options.tool} failed (exit code ${exit.code ?? 'unknown'})${tail}`);
  if (options.input && !exit.inputComplete) return failure(options, `${options.tool} exited before reading all of its input${tail}`);
  return null;
}

function failure(options: ChildOptions, message: string): LifeboatError {
  return new LifeboatError(options.failureCode ?? 'source_failed', message);
}

function inputFailure(options: ChildOptions, err: unknown): LifeboatError {
  if (err instanceof LifeboatError) return err;
  return failure(options, `reading the input of ${options.tool} failed: ${err instanceof Error ? err.message : String(err)}`);
}

function stderrSuffix(stderr: string): string {
  return stderr ? `: ${stderr}` : ' (it printed no error message)';
}

/** Why spawn failed, naming only the program (never its arguments). */
function spawnReason(program: string, err: NodeJS.ErrnoException): string {
  const name = path.posix.basename(program);
  switch (err.code) {
    case 'ENOENT':
      return `program "${name}" was not found (is it installed and on PATH?) or the working directory does not exist`;
    case 'EACCES':
      return `permission denied running "${name}"`;
    case 'ENOTDIR':
      return `a component of the path of "${name}" or of the working directory is not a directory`;
    default:
      return `${err.code ?? 'error'} running "${name}"`;
  }
}

/** The last `limit` bytes written to it, as text for an error message. */
export class TailBuffer {
  private tail: Buffer = Buffer.alloc(0);
  private truncated = false;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    const joined = this.tail.length === 0 ? chunk : Buffer.concat([this.tail, chunk]);
    if (joined.length > this.limit) {
      this.truncated = true;
      this.tail = Buffer.from(joined.subarray(joined.length - this.limit));
    } else {
      this.tail = joined;
    }
  }

  /** Trimmed, control characters (but newlines and tabs) removed, redacted; "…" marks a cut beginning. */
  text(): string {
    let text = this.tail.toString('utf8');
    if (this.truncated) {
      // Start at a line boundary when there is one: the first line was cut (maybe mid-character).
      const newline = text.indexOf('\n');
      text = '…' + (newline >= 0 && newline < text.length - 1 ? text.slice(newline + 1) : text.replace(/^\uFFFD+/, ''));
    }
    return redact(text.replace(/\r\n?/g, '\n').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '').trim());
  }
}

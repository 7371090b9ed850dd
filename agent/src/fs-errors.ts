import { LifeboatError } from '@lifeboat/shared';

/**
 * The small helpers both halves of the files source share (archive/tar-writer.ts and restore/): Node's
 * filesystem errors and a cancelled job turned into messages people can act on, paths as shown in those
 * messages, and progress reported at a bounded rate.
 */

const PROGRESS_INTERVAL_MS = 250;

export function throttled(report: (bytes: number) => void): (bytes: number) => void {
  let last = 0;
  return (bytes) => {
    const now = Date.now();
    if (now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    report(bytes);
  };
}

export function abortReason(signal: AbortSignal): LifeboatError {
  const reason: unknown = signal.reason;
  if (reason instanceof LifeboatError) return reason;
  return new LifeboatError('cancelled', typeof reason === 'string' ? reason : 'the job was cancelled');
}

export function isFsError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

export function isCode(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/** "EACCES: permission denied", without the syscall and path Node appends (the path is already in our message). */
export function fsReason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.message.replace(/, \w+ '[\s\S]*'$/, '');
}

/** A path as people read it in a warning: quoted when it holds control characters (a newline would split a log line). */
export function shown(p: string): string {
  return /[\x00-\x1f\x7f]/.test(p) ? JSON.stringify(p) : p;
}

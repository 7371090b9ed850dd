/**
 * Expected failures travel as values with a code and a message a person can act on.
 * `LifeboatError` carries one across a function boundary; exceptions without a code are bugs.
 */
export const ErrorCodes = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'invalid_plan',
  'unknown_agent',
  'agent_offline',
  'path_not_found',
  'source_failed',
  'upload_failed',
  'integrity',
  'store_full',
  'store_failed',
  'restore_refused',
  'restore_failed',
  'timeout',
  'cancelled',
  'disconnected',
  'server_restarted',
  'protocol',
  'internal',
] as const;
export type ErrorCode = (typeof ErrorCodes)[number];

export class LifeboatError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: string[],
  ) {
    super(message);
    this.name = 'LifeboatError';
  }
}

/** A message safe to show or log: never the raw error of a child process, whose text carries its argv. */
export function describeError(err: unknown): { code: ErrorCode; message: string } {
  if (err instanceof LifeboatError) return { code: err.code, message: err.message };
  if (err instanceof Error) {
    const sys = err as NodeJS.ErrnoException;
    if (sys.code === 'ENOSPC') return { code: 'store_full', message: `no space left on device${sys.path ? ` (${sys.path})` : ''}` };
    return { code: 'internal', message: err.message };
  }
  return { code: 'internal', message: String(err) };
}

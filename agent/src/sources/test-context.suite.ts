import type { Readable } from 'node:stream';
import { expect } from 'vitest';
import { createLogger, LifeboatError } from '@lifeboat/shared';
import type { JobContext } from './source.js';

/** One progress report as a source made it, with when. */
export interface ProgressReport {
  phase: string;
  bytes: number;
  totalBytes?: number;
  at: number;
}

export interface FakeJobContext {
  /** Hand this to a source's backup or restore. */
  ctx: JobContext;
  /** Every ctx.warn(message), in order. */
  warnings: string[];
  /** Every ctx.progress(…), in order. */
  progress: ProgressReport[];
  /** Cancels the job: aborts ctx.signal (as a cancel, a timeout or a lost connection would). */
  abort: (reason?: unknown) => void;
}

/**
 * A JobContext for source tests: records warnings and progress, logs nowhere, and can be aborted.
 * Shared by the source tests; not part of the build (*.suite.ts).
 */
export function fakeJobContext(options: { jobId?: string; log?: (line: string) => void } = {}): FakeJobContext {
  const controller = new AbortController();
  const warnings: string[] = [];
  const progress: ProgressReport[] = [];
  const ctx: JobContext = {
    jobId: options.jobId ?? 'job_test',
    signal: controller.signal,
    log: createLogger('test', { level: 'debug', write: options.log ?? (() => {}) }),
    warn: (message) => warnings.push(message),
    progress: (phase, bytes, totalBytes) => progress.push({ phase, bytes, totalBytes, at: Date.now() }),
  };
  return { ctx, warnings, progress, abort: (reason?: unknown) => controller.abort(reason) };
}

/** All of a stream's bytes. */
export async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** The LifeboatError a promise rejects with (the test fails if it resolves, or rejects with anything else). */
export async function rejection(promise: Promise<unknown>): Promise<LifeboatError> {
  const err = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LifeboatError);
  return err as LifeboatError;
}

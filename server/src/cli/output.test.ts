import { describe, expect, it } from 'vitest';
import { jobFixture } from './job-fixture.suite.js';
import { ProgressTracker, formatFields, formatTable, jobOutcome, oneLine, shellQuote } from './output.js';

const base = jobFixture({ status: 'running', startedAt: '2025-01-01T00:00:00.000Z' });

describe('formatTable', () => {
  it('pads columns to the widest cell and leaves no trailing blanks', () => {
    expect(formatTable(['ID', 'NAME'], [['a', 'x'], ['long-id', '']])).toEqual(['ID       NAME', 'a        x', 'long-id']);
  });
});

describe('formatFields', () => {
  it('aligns keys and leaves out absent values', () => {
    expect(formatFields([['job', 'j'], ['snapshot', null], ['status', 'ok']])).toEqual(['job     j', 'status  ok']);
  });
});

describe('shellQuote', () => {
  it('leaves plain words alone and single-quotes the rest', () => {
    expect(shellQuote('https://h:7400')).toBe('https://h:7400');
    expect(shellQuote("a b'c")).toBe(`'a b'\\''c'`);
  });
});

describe('oneLine', () => {
  it('flattens and truncates', () => {
    expect(oneLine('a\n  b', 10)).toBe('a b');
    expect(oneLine('x'.repeat(20), 5)).toBe('xxxx…');
  });
});

describe('ProgressTracker', () => {
  it('measures the rate between progress stamps and restarts it when the phase changes', () => {
    const tracker = new ProgressTracker(0);
    const at = (s: number) => new Date(Date.UTC(2025, 0, 1, 0, 0, s)).toISOString();
    tracker.line({ ...base, progress: { phase: 'dump', bytes: 0, at: at(0) } }, 0);
    expect(tracker.line({ ...base, progress: { phase: 'dump', bytes: 2048, at: at(2) } }, 2000)).toBe('job_1 running: dump 2.00 KiB, 1.00 KiB/s (2.0s)');
    expect(tracker.line({ ...base, progress: { phase: 'files', bytes: 10, totalBytes: 40, at: at(3) } }, 3000)).toBe('job_1 running: files 10 B of 40 B (25%) (3.0s)');
  });

  it('says a queued job waits for its agent', () => {
    expect(new ProgressTracker(0).line({ ...base, status: 'queued' }, 61_000)).toBe('job_1 queued: waiting for the agent (1m1s)');
  });
});

describe('jobOutcome', () => {
  it('is not ok for a cancelled job, and says why', () => {
    const outcome = jobOutcome({ ...base, status: 'cancelled', error: { code: 'cancelled', message: 'plan deleted' } });
    expect(outcome.ok).toBe(false);
    expect(outcome.lines[0]).toBe('backup job_1 cancelled: cancelled: plan deleted');
  });

  it('says "no reason given" for a failure without an error', () => {
    expect(jobOutcome({ ...base, status: 'failed' }).lines[0]).toBe('backup job_1 failed: no reason given');
  });
});

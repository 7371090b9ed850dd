import type { JobView } from '@lifeboat/shared';

/** A JobView for the CLI's tests: a queued manual backup, with whatever a test sets on top. */
export function jobFixture(overrides: Partial<JobView> = {}): JobView {
  return {
    id: 'job_1',
    kind: 'backup',
    planId: 'p',
    agentName: 'a',
    status: 'queued',
    trigger: 'manual',
    createdAt: '2025-01-01T00:00:00.000Z',
    startedAt: null,
    finishedAt: null,
    error: null,
    warnings: [],
    progress: null,
    snapshotId: null,
    summary: null,
    ...overrides,
  };
}

import { describe, expect, it } from 'vitest';
import { parsePlanFile } from './plan.js';

const good = {
  plans: [
    {
      id: 'web-files',
      agent: 'web-1',
      schedule: '0 3 * * *',
      rpo: '26h',
      steps: [{ files: { paths: ['/srv/app'], exclude: ['**/*.tmp'] } }],
      retention: { keepLast: 2, keepDaily: 7 },
    },
  ],
};

describe('plan schema', () => {
  it('accepts a valid plan and fills defaults', () => {
    const result = parsePlanFile(good);
    expect(result.ok).toBe(true);
    if (result.ok) {
      expect(result.value.plans[0]!.timeout).toBe('12h');
      expect(result.value.plans[0]!.steps[0]!.files!.exclude).toEqual(['**/*.tmp']);
    }
  });

  it('lists every problem by path, with "required" for a missing field', () => {
    const result = parsePlanFile({
      plans: [
        { id: 'ok', agent: 'web-1', steps: [{ files: { paths: ['/a'] } }, { files: { exclude: [] } }] },
        { id: '-bad', agent: 'web 1', rpo: 'soon', steps: [{ files: { paths: ['relative'] } }] },
      ],
    });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.problems).toContain('plans[0].steps[1].files.paths: required');
      expect(result.problems.some((p) => p.startsWith('plans[1].id:'))).toBe(true);
      expect(result.problems.some((p) => p.startsWith('plans[1].agent:'))).toBe(true);
      expect(result.problems.some((p) => p.startsWith('plans[1].rpo:'))).toBe(true);
      expect(result.problems).toContain('plans[1].steps[0].files.paths[0]: must be an absolute path');
    }
  });

  it('refuses a step naming no source or an unknown one, and duplicate ids', () => {
    const result = parsePlanFile({
      plans: [
        { id: 'a', agent: 'x', steps: [{}, { tarball: {} }] },
        { id: 'a', agent: 'x', steps: [{ files: { paths: ['/a'] } }] },
      ],
    });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.problems.some((p) => p.startsWith('plans[0].steps[0]: a step names exactly one source'))).toBe(true);
      expect(result.problems.some((p) => p.startsWith('plans[0].steps[1]:') && p.includes('tarball'))).toBe(true);
      expect(result.problems).toContain('plans[1].id: duplicate plan id "a" (also plans[0])');
    }
  });
});

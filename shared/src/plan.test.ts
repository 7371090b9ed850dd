import { describe, expect, it } from 'vitest';
import { parsePlanFile, zstdLevel } from './plan.js';

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
      expect(result.value.plans[0]!.compression).toBe(3);
      expect(result.value.plans[0]!.steps[0]!.files!.exclude).toEqual(['**/*.tmp']);
    }
  });

  it('takes a zstd level from 1 to 9, or "off", and refuses the rest with what is allowed', () => {
    const withCompression = (compression: unknown) => parsePlanFile({ plans: [{ ...good.plans[0], compression }] });
    for (const [given, level] of [['off', 0], [1, 1], [9, 9]] as const) {
      const result = withCompression(given);
      expect(result.ok).toBe(true);
      if (result.ok) expect(zstdLevel(result.value.plans[0]!.compression)).toBe(level);
    }
    for (const bad of [0, 10, 19, 2.5, 'fast', '3', null]) {
      const result = withCompression(bad);
      expect(result.ok, String(bad)).toBe(false);
      if (!result.ok) expect(result.problems.join('\n')).toMatch(/^plans\[0\]\.compression: a zstd level from 1 to 9, or "off"/);
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

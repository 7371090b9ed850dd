import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RetentionPolicy } from '@lifeboat/shared';
import {
  applyRetention,
  calendarFor,
  isoWeek,
  REASON_NEWEST_DRILL_VERIFIED,
  REASON_NEWEST_SUCCESSFUL,
  REASON_NO_POLICY,
  type RetentionInput,
  type RetentionResult,
  type SnapshotStatus,
} from './policy.js';

const TESTDATA = fileURLToPath(new URL('./testdata/', import.meta.url));
const UPDATE_GOLDEN = process.env.UPDATE_GOLDEN === '1';

/** testdata/<case>.json: what goes in (and, written by hand, which ids must stay); <case>.golden.json: what comes out. */
interface GoldenCase {
  description: string;
  timeZone?: string;
  now: string;
  policy: unknown;
  expectKeep: string[];
  snapshots: Array<{ id: string; createdAt: string; status?: SnapshotStatus; drillVerified?: boolean }>;
}

/** One decision per line, so a changed reason shows as a one-line diff. */
function formatGolden(result: RetentionResult): string {
  const list = (decisions: RetentionResult['keep']) =>
    decisions.length === 0 ? '[]' : `[\n${decisions.map((d) => `    ${JSON.stringify(d)}`).join(',\n')}\n  ]`;
  return `{\n  "keep": ${list(result.keep)},\n  "remove": ${list(result.remove)}\n}\n`;
}

const caseNames = readdirSync(TESTDATA)
  .filter((f) => f.endsWith('.json') && !f.endsWith('.golden.json'))
  .map((f) => f.slice(0, -'.json'.length))
  .sort();

describe('applyRetention against golden files', () => {
  it('has golden cases to run', () => {
    expect(caseNames.length).toBeGreaterThanOrEqual(15);
  });

  it.each(caseNames)('%s', (name) => {
    const input = JSON.parse(readFileSync(join(TESTDATA, `${name}.json`), 'utf8')) as GoldenCase;
    const policy = RetentionPolicy.parse(input.policy);
    const snapshots: RetentionInput[] = input.snapshots.map((s) => ({
      id: s.id,
      createdAt: new Date(s.createdAt),
      status: s.status ?? 'complete',
      ...(s.drillVerified !== undefined ? { drillVerified: s.drillVerified } : {}),
    }));
    const result = applyRetention(snapshots, policy, { now: new Date(input.now), ...(input.timeZone ? { timeZone: input.timeZone } : {}) });

    // Written by hand in the input, so regenerating a golden file cannot quietly bless a wrong answer.
    expect(result.keep.map((d) => d.id)).toEqual(input.expectKeep);

    const goldenPath = join(TESTDATA, `${name}.golden.json`);
    const actual = formatGolden(result);
    if (UPDATE_GOLDEN) writeFileSync(goldenPath, actual);
    else if (!existsSync(goldenPath)) throw new Error(`${goldenPath} is missing: run with UPDATE_GOLDEN=1 and review the file`);
    expect(actual).toBe(readFileSync(goldenPath, 'utf8'));
  });
});

const H = 3_600_000;
const D = 24 * H;
const NOW = new Date('2026-11-20T12:00:00Z');

function daily(count: number, end = Date.parse('2026-11-20T03:00:00Z'), extra: Partial<RetentionInput> = {}): RetentionInput[] {
  return Array.from({ length: count }, (_, i) => ({ id: `s${i}`, createdAt: end - i * D, status: 'complete' as const, ...extra }));
}

describe('applyRetention', () => {
  it('keeps everything when the plan has no retention policy at all', () => {
    const result = applyRetention(daily(5), undefined, { now: NOW });
    expect(result.remove).toEqual([]);
    expect(result.keep.map((d) => d.reasons)).toEqual(Array(5).fill([REASON_NO_POLICY]));
  });

  it('lists every reason of a snapshot kept by several rules, in rule order, safety last', () => {
    const result = applyRetention(daily(3), { keepLast: 1, keepDaily: 2, keepWeekly: 1, keepWithin: '1d' }, { now: NOW });
    expect(result.keep[0]).toEqual({
      id: 's0',
      reasons: [
        'last snapshot (1 of 1)',
        'daily snapshot (2026-11-20)',
        'weekly snapshot (2026-W47)',
        'within 1d of the newest successful snapshot',
        REASON_NEWEST_SUCCESSFUL,
      ],
    });
    expect(result.keep[1]).toEqual({ id: 's1', reasons: ['daily snapshot (2026-11-19)'] });
    expect(result.remove).toEqual([{ id: 's2', reasons: ['no rule kept it'] }]);
  });

  it('does not depend on the order of its input, and accepts Date or milliseconds', () => {
    const snapshots = daily(20).map((s, i) => ({ ...s, status: (['complete', 'failed', 'partial', 'damaged'] as const)[i % 4]! }));
    const policy = { keepLast: 2, keepDaily: 4 };
    const expected = applyRetention(snapshots, policy, { now: NOW });
    const shuffled = [...snapshots].reverse().map((s, i) => (i % 2 ? { ...s, createdAt: new Date(s.createdAt) } : s));
    expect(applyRetention(shuffled, policy, { now: NOW })).toEqual(expected);
  });

  it('orders snapshots taken at the same instant by id, so the newest one is well defined', () => {
    const at = Date.parse('2026-11-20T03:00:00Z');
    const result = applyRetention(
      [{ id: 'b', createdAt: at, status: 'complete' }, { id: 'a', createdAt: at, status: 'complete' }],
      { keepLast: 1 },
      { now: NOW },
    );
    expect(result.keep.map((d) => d.id)).toEqual(['a']);
  });

  it('measures keepWithin from the newest snapshot that is not in the future', () => {
    const snapshots = [
      { id: 'future', createdAt: NOW.getTime() + 30 * D, status: 'complete' as const },
      ...daily(5),
    ];
    const result = applyRetention(snapshots, { keepWithin: '2d' }, { now: NOW });
    // From s0 (2026-11-20 03:00): s1 is within, s2 is exactly 2d older and goes, like restic's strict "after".
    expect(result.keep.map((d) => d.id)).toEqual(['future', 's0', 's1']);
  });

  it('keeps the newest drill-verified snapshot even when it is damaged or failed', () => {
    const snapshots: RetentionInput[] = [...daily(3), { id: 'old', createdAt: Date.parse('2026-01-01T00:00:00Z'), status: 'failed', drillVerified: true }];
    const result = applyRetention(snapshots, { keepLast: 1 }, { now: NOW });
    expect(result.keep.find((d) => d.id === 'old')?.reasons).toEqual(['failed snapshots never count toward a keep', REASON_NEWEST_DRILL_VERIFIED]);
  });

  it('never removes a damaged snapshot: a person does, after reading the damage report', () => {
    const result = applyRetention(daily(10, undefined, { status: 'damaged' }), { keepLast: 1 }, { now: NOW });
    expect(result.remove).toEqual([]);
    expect(result.keep[0]!.reasons).toEqual(['damaged snapshots never count toward a keep', 'damaged snapshots are kept until removed by hand']);
  });

  it('refuses what can only be a bug: duplicate ids, an unknown time zone, an invalid date or duration', () => {
    expect(() => applyRetention([...daily(1), ...daily(1)], { keepLast: 1 }, { now: NOW })).toThrow(/appears twice/);
    expect(() => applyRetention(daily(1), { keepLast: 1 }, { now: NOW, timeZone: 'Mars/Olympus' })).toThrow(/not an IANA time zone/);
    expect(() => applyRetention([{ id: 'x', createdAt: Number.NaN, status: 'complete' }], { keepLast: 1 }, { now: NOW })).toThrow(/createdAt/);
    expect(() => applyRetention(daily(1), { keepWithin: 'a week' }, { now: NOW })).toThrow(/not a duration/);
  });
});

describe('calendar periods in a time zone', () => {
  it('follows the UTC offset across the New York fall-back and spring-forward', () => {
    const ny = calendarFor('America/New_York');
    expect(ny.local(Date.parse('2026-11-01T05:30:00Z'))).toMatchObject({ day: 1, hour: 1, minute: 30, offsetMinutes: -240 });
    expect(ny.local(Date.parse('2026-11-01T06:30:00Z'))).toMatchObject({ day: 1, hour: 1, minute: 30, offsetMinutes: -300 });
    expect(ny.period(Date.parse('2026-11-01T05:30:00Z'), 'hourly')).toBe('2026-11-01 01:00 -04:00');
    expect(ny.period(Date.parse('2026-11-01T06:30:00Z'), 'hourly')).toBe('2026-11-01 01:00 -05:00');
    // 2026-03-08 02:00 EST becomes 03:00 EDT: the instant right after is 03:00, never 02:xx or 24:xx.
    expect(ny.period(Date.parse('2026-03-08T07:00:00Z'), 'hourly')).toBe('2026-03-08 03:00 -04:00');
    expect(ny.period(Date.parse('2026-03-08T05:00:00Z'), 'hourly')).toBe('2026-03-08 00:00 -05:00');
  });

  it('puts local midnight in the local day', () => {
    const berlin = calendarFor('Europe/Berlin');
    expect(berlin.period(Date.parse('2026-10-24T22:00:00Z'), 'daily')).toBe('2026-10-25');
    expect(berlin.period(Date.parse('2026-10-24T21:59:59Z'), 'daily')).toBe('2026-10-24');
    expect(berlin.period(Date.parse('2026-12-31T23:30:00Z'), 'yearly')).toBe('2027');
    expect(berlin.period(Date.parse('2026-12-31T23:30:00Z'), 'monthly')).toBe('2027-01');
  });

  it('numbers ISO weeks across year boundaries', () => {
    expect(isoWeek(2026, 12, 31)).toEqual({ isoYear: 2026, week: 53 });
    expect(isoWeek(2027, 1, 3)).toEqual({ isoYear: 2026, week: 53 });
    expect(isoWeek(2027, 1, 4)).toEqual({ isoYear: 2027, week: 1 });
    expect(isoWeek(2024, 12, 30)).toEqual({ isoYear: 2025, week: 1 });
    expect(isoWeek(2021, 1, 3)).toEqual({ isoYear: 2020, week: 53 });
    expect(isoWeek(2026, 11, 20)).toEqual({ isoYear: 2026, week: 47 });
  });

  it('handles a zone whose clocks move by 30 minutes (Australia/Lord_Howe)', () => {
    const lordHowe = calendarFor('Australia/Lord_Howe');
    // 2026-04-05 02:00 +11:00 goes back to 01:30 +10:30.
    expect(lordHowe.period(Date.parse('2026-04-04T14:45:00Z'), 'hourly')).toBe('2026-04-05 01:00 +11:00');
    expect(lordHowe.period(Date.parse('2026-04-04T15:15:00Z'), 'hourly')).toBe('2026-04-05 01:00 +10:30');
  });
});

/** Small deterministic PRNG (mulberry32), so a failing property prints a seed that reproduces it. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ZONES = ['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Australia/Lord_Howe', 'Pacific/Chatham'];
const STATUSES: SnapshotStatus[] = ['complete', 'complete', 'complete', 'complete', 'failed', 'partial', 'damaged'];

function randomCase(seed: number) {
  const rnd = random(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rnd() * items.length)]!;
  const maybeCount = () => (rnd() < 0.5 ? undefined : Math.floor(rnd() * 6));
  const policy: RetentionPolicy = {};
  for (const key of ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly'] as const) {
    const n = maybeCount();
    if (n !== undefined) policy[key] = n;
  }
  if (rnd() < 0.3) policy.keepWithin = pick(['90m', '6h', '2d', '1w']);
  const now = Date.parse('2026-11-01T00:00:00Z') + Math.floor(rnd() * 400) * D;
  const span = pick([6 * H, 3 * D, 40 * D, 900 * D]);
  const count = Math.floor(rnd() * 40);
  const snapshots: RetentionInput[] = Array.from({ length: count }, (_, i) => ({
    id: `snap-${seed}-${i}`,
    createdAt: now - Math.floor(rnd() * span) + (rnd() < 0.05 ? 2 * H : 0),
    status: pick(STATUSES),
    ...(rnd() < 0.15 ? { drillVerified: true } : {}),
  }));
  return { policy, snapshots, now: new Date(now), timeZone: pick(ZONES) };
}

function toMs(createdAt: Date | number): number {
  return typeof createdAt === 'number' ? createdAt : createdAt.getTime();
}

describe('applyRetention properties (500 random plans)', () => {
  const seeds = Array.from({ length: 500 }, (_, i) => i + 1);

  it('puts every snapshot in exactly one of keep and remove, with at least one reason', () => {
    for (const seed of seeds) {
      const c = randomCase(seed);
      const result = applyRetention(c.snapshots, c.policy, c);
      const ids = [...result.keep, ...result.remove].map((d) => d.id);
      expect(ids.sort(), `seed ${seed}`).toEqual(c.snapshots.map((s) => s.id).sort());
      for (const d of [...result.keep, ...result.remove]) expect(d.reasons.length, `seed ${seed} ${d.id}`).toBeGreaterThan(0);
    }
  });

  it('always keeps the newest complete and the newest drill-verified snapshot, and every damaged one', () => {
    for (const seed of seeds) {
      const c = randomCase(seed);
      const result = applyRetention(c.snapshots, c.policy, c);
      const kept = new Set(result.keep.map((d) => d.id));
      const newestFirst = [...c.snapshots].sort((a, b) => toMs(b.createdAt) - toMs(a.createdAt) || (a.id < b.id ? -1 : 1));
      const newestComplete = newestFirst.find((s) => s.status === 'complete');
      const newestVerified = newestFirst.find((s) => s.drillVerified);
      if (newestComplete) expect(kept.has(newestComplete.id), `seed ${seed}`).toBe(true);
      if (newestVerified) expect(kept.has(newestVerified.id), `seed ${seed}`).toBe(true);
      for (const s of c.snapshots) if (s.status === 'damaged') expect(kept.has(s.id), `seed ${seed}`).toBe(true);
    }
  });

  it('removes nothing more when run again on what it kept', () => {
    for (const seed of seeds) {
      const c = randomCase(seed);
      const first = applyRetention(c.snapshots, c.policy, c);
      const kept = new Set(first.keep.map((d) => d.id));
      const second = applyRetention(c.snapshots.filter((s) => kept.has(s.id)), c.policy, c);
      expect(second.remove, `seed ${seed}`).toEqual([]);
    }
  });

  it('never lets a count rule keep more snapshots than its count (plus the oldest while slots are unused)', () => {
    for (const seed of seeds) {
      const c = randomCase(seed);
      const result = applyRetention(c.snapshots, c.policy, c);
      const reasons = result.keep.flatMap((d) => d.reasons);
      const rules = [
        ['last snapshot', c.policy.keepLast],
        ['hourly snapshot', c.policy.keepHourly],
        ['daily snapshot', c.policy.keepDaily],
        ['weekly snapshot', c.policy.keepWeekly],
        ['monthly snapshot', c.policy.keepMonthly],
        ['yearly snapshot', c.policy.keepYearly],
      ] as const;
      for (const [prefix, count] of rules) {
        const used = reasons.filter((r) => r.startsWith(prefix) || r.startsWith(`oldest ${prefix}`)).length;
        expect(used, `seed ${seed} ${prefix}`).toBeLessThanOrEqual(count ?? 0);
      }
    }
  });
});

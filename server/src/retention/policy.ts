import { parseDuration, type RetentionPolicy } from '@lifeboat/shared';

/**
 * Which snapshots a plan's retention policy keeps, and why: a pure function of the snapshot list, the policy,
 * the time zone and `now`. The server's prune (dry run or not) calls it and deletes exactly `remove`.
 *
 * Semantics are restic's `forget` (ApplyPolicy), with Lifeboat's safety rules on top:
 * - snapshots are taken newest first; only complete snapshots count toward a keep rule;
 * - keepLast keeps the N newest; keepHourly/Daily/Weekly/Monthly/Yearly keep the newest snapshot of each of the
 *   last N calendar periods (in the plan's time zone) that have one; while a rule still has unused slots at the
 *   oldest snapshot, that oldest snapshot is kept too (restic ≥ 0.17: keeps the longest history the counts allow);
 *   when clocks go back, the repeated wall-clock hour is two hourly periods (the UTC offset is part of the hour);
 * - keepWithin keeps every snapshot strictly newer than (newest successful snapshot − duration), measured from the
 *   newest snapshot, not from `now`, so that backups which stopped running never make a prune delete the history;
 *   the duration is elapsed time ("7d" = 168 h), like every other duration in a plan;
 * - the newest complete snapshot and the newest drill-verified snapshot are always kept;
 * - failed snapshots are removed; partial ones too, except the newest while no complete snapshot is newer;
 *   damaged ones (marked by verify) are never removed by a policy;
 * - no policy, or a policy whose every count is 0, keeps everything.
 * Each snapshot kept by several rules lists every reason.
 */

export type SnapshotStatus = 'complete' | 'failed' | 'partial' | 'damaged';

export interface RetentionInput {
  id: string;
  /** When the snapshot was taken, by the server's clock. */
  createdAt: Date | number;
  status: SnapshotStatus;
  /** A restore drill restored this snapshot and every check passed. */
  drillVerified?: boolean;
}

export interface Decision {
  id: string;
  reasons: string[];
}

export interface RetentionResult {
  /** Newest first. */
  keep: Decision[];
  /** Newest first. */
  remove: Decision[];
}

export interface RetentionOptions {
  now: Date;
  /** IANA name; calendar periods (hour, day, ISO week, month, year) are counted on this zone's wall clock. Default UTC. */
  timeZone?: string;
}

export const REASON_NO_POLICY = 'no retention policy';
export const REASON_ZERO_POLICY = 'every count in the retention policy is 0: treated as no policy';
export const REASON_NEWEST_SUCCESSFUL = 'newest successful snapshot is always kept';
export const REASON_NEWEST_DRILL_VERIFIED = 'newest drill-verified snapshot is always kept';
export const REASON_NO_RULE = 'no rule kept it';

export type BucketRule = 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';

const COUNT_KEYS = ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly'] as const;

const BUCKET_RULES: ReadonlyArray<{ rule: BucketRule; key: (typeof COUNT_KEYS)[number] }> = [
  { rule: 'hourly', key: 'keepHourly' },
  { rule: 'daily', key: 'keepDaily' },
  { rule: 'weekly', key: 'keepWeekly' },
  { rule: 'monthly', key: 'keepMonthly' },
  { rule: 'yearly', key: 'keepYearly' },
];

interface Snapshot {
  id: string;
  ms: number;
  status: string;
  drillVerified: boolean;
}

export function applyRetention(
  snapshots: readonly RetentionInput[],
  policy: RetentionPolicy | undefined,
  options: RetentionOptions,
): RetentionResult {
  const timeZone = options.timeZone ?? 'UTC';
  const nowMs = options.now.getTime();
  if (!Number.isFinite(nowMs)) throw new RangeError('applyRetention: options.now is not a valid date');
  const calendar = calendarFor(timeZone);
  const list = normalize(snapshots);

  const noPolicy = !policy || (COUNT_KEYS.every((k) => policy[k] === undefined) && policy.keepWithin === undefined);
  if (noPolicy) return { keep: list.map((s) => ({ id: s.id, reasons: [REASON_NO_POLICY] })), remove: [] };
  // restic treats an all-zero policy as empty too. Keeping only the two safety snapshots instead would delete a
  // plan's whole history in one scheduled prune because of what is almost always a templating mistake.
  if (COUNT_KEYS.every((k) => !policy[k]) && policy.keepWithin === undefined) {
    return { keep: list.map((s) => ({ id: s.id, reasons: [REASON_ZERO_POLICY] })), remove: [] };
  }

  const withinMs = policy.keepWithin === undefined ? null : parseDuration(policy.keepWithin);
  if (policy.keepWithin !== undefined && withinMs === null) {
    throw new RangeError(`applyRetention: keepWithin "${policy.keepWithin}" is not a duration`);
  }

  const reasons = new Map<string, string[]>(list.map((s) => [s.id, []]));
  const add = (id: string, reason: string) => reasons.get(id)!.push(reason);

  const counted = list.filter((s) => s.status === 'complete');
  const newestSuccessful = counted[0];

  // keepLast: each snapshot is its own period, so it simply takes the N newest.
  const keepLast = policy.keepLast ?? 0;
  counted.slice(0, keepLast).forEach((s, i) => add(s.id, `last snapshot (${i + 1} of ${keepLast})`));

  for (const { rule, key } of BUCKET_RULES) {
    let slots = policy[key] ?? 0;
    // A set rather than restic's "last value": wall-clock periods need not be contiguous in a list sorted by
    // instant when a zone's clock goes back across a period boundary.
    const seen = new Set<string>();
    counted.forEach((s, i) => {
      if (slots === 0) return;
      const period = calendar.period(s.ms, rule);
      if (!seen.has(period)) {
        seen.add(period);
        slots--;
        add(s.id, `${rule} snapshot (${period})`);
      } else if (i === counted.length - 1) {
        slots--;
        add(s.id, `oldest ${rule} snapshot (${period}): the ${rule} rule has unused slots`);
      }
    });
  }

  if (withinMs !== null && newestSuccessful) {
    // Like restic: from the newest snapshot that is not in the future, so one bogus future timestamp cannot
    // push every other snapshot out of the window. With none at or before now, from now.
    const newestPast = counted.find((s) => s.ms <= nowMs);
    const reference = newestPast?.ms ?? nowMs;
    const reason = `within ${policy.keepWithin} of ${newestPast ? 'the newest successful snapshot' : 'now (every successful snapshot is dated in the future)'}`;
    for (const s of counted) if (s.ms > reference - withinMs) add(s.id, reason);
  }

  if (newestSuccessful) add(newestSuccessful.id, REASON_NEWEST_SUCCESSFUL);

  const newestPartial = list.find((s) => s.status === 'partial');
  const newestDrillVerified = list.find((s) => s.drillVerified);

  const keep: Decision[] = [];
  const remove: Decision[] = [];
  for (const s of list) {
    const own = reasons.get(s.id)!;
    // Statuses other than complete never count toward a keep; what happens to them is decided here.
    let keepIt = own.length > 0;
    switch (s.status) {
      case 'complete':
        break;
      case 'failed':
        // Nothing in a failed snapshot is restorable as a whole; it only holds storage.
        own.push('failed snapshots never count toward a keep');
        break;
      case 'partial':
        own.push('partial snapshots never count toward a keep');
        // Some of its artifacts are complete: while no successful snapshot is newer, it may hold the only copy
        // of the most recent data. Only the newest one, so a plan that keeps failing does not pile them up.
        if (s === newestPartial && (!newestSuccessful || s.ms > newestSuccessful.ms)) {
          own.push('newest partial snapshot is kept until a successful snapshot is newer');
          keepIt = true;
        }
        break;
      case 'damaged':
        // `verify` marked it: its intact artifacts may still restore, and the damage report must stay visible
        // until someone looks. A person removes it; a scheduled prune never does.
        own.push('damaged snapshots never count toward a keep', 'damaged snapshots are kept until removed by hand');
        keepIt = true;
        break;
      default:
        own.push(`status "${s.status}" is unknown: never counts toward a keep, kept to be safe`);
        keepIt = true;
    }
    if (s === newestDrillVerified) {
      own.push(REASON_NEWEST_DRILL_VERIFIED);
      keepIt = true;
    }
    if (keepIt) keep.push({ id: s.id, reasons: own });
    else remove.push({ id: s.id, reasons: own.length > 0 ? own : [REASON_NO_RULE] });
  }
  return { keep, remove };
}

/** Newest first; equal times ordered by id so that the result never depends on the order the catalog returned. */
function normalize(snapshots: readonly RetentionInput[]): Snapshot[] {
  const ids = new Set<string>();
  const list = snapshots.map((s) => {
    if (ids.has(s.id)) throw new RangeError(`applyRetention: snapshot ${s.id} appears twice`);
    ids.add(s.id);
    const ms = typeof s.createdAt === 'number' ? s.createdAt : s.createdAt.getTime();
    if (!Number.isFinite(ms)) throw new RangeError(`applyRetention: snapshot ${s.id} has no valid createdAt`);
    return { id: s.id, ms, status: s.status as string, drillVerified: s.drillVerified === true };
  });
  return list.sort((a, b) => b.ms - a.ms || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export interface LocalTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  /** Minutes east of UTC in effect at that instant (e.g. -240 for EDT). */
  offsetMinutes: number;
}

export interface ZoneCalendar {
  local(ms: number): LocalTime;
  /** The calendar period holding that instant, as a readable key: "2026-11-01 01:00 -04:00", "2026-11-20", "2026-W47", "2026-11", "2026". */
  period(ms: number, rule: BucketRule): string;
}

const calendars = new Map<string, ZoneCalendar>();

/** Wall-clock arithmetic for one IANA zone, through Intl (the tz database Node ships), cached per zone. */
export function calendarFor(timeZone: string): ZoneCalendar {
  const cached = calendars.get(timeZone);
  if (cached) return cached;
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  } catch {
    throw new RangeError(`applyRetention: "${timeZone}" is not an IANA time zone`);
  }

  const local = (ms: number): LocalTime => {
    const parts: Record<string, number> = {};
    for (const p of format.formatToParts(ms)) if (p.type !== 'literal') parts[p.type] = Number(p.value);
    const t = {
      year: parts.year!,
      month: parts.month!,
      day: parts.day!,
      // Some engines print midnight as 24 even with h23.
      hour: parts.hour! % 24,
      minute: parts.minute!,
      second: parts.second!,
    };
    const wallAsUtc = Date.UTC(t.year, t.month - 1, t.day, t.hour, t.minute, t.second);
    const offsetMinutes = Math.round((wallAsUtc - Math.floor(ms / 1000) * 1000) / 60_000);
    return { ...t, offsetMinutes };
  };

  const calendar: ZoneCalendar = {
    local,
    period(ms, rule) {
      const t = local(ms);
      const ymd = `${t.year}-${pad(t.month)}-${pad(t.day)}`;
      switch (rule) {
        case 'hourly':
          // The offset is part of the hour: when clocks go back, 01:00-02:00 happens twice and those are two hours.
          return `${ymd} ${pad(t.hour)}:00 ${formatOffset(t.offsetMinutes)}`;
        case 'daily':
          return ymd;
        case 'weekly': {
          const { isoYear, week } = isoWeek(t.year, t.month, t.day);
          return `${isoYear}-W${pad(week)}`;
        }
        case 'monthly':
          return `${t.year}-${pad(t.month)}`;
        case 'yearly':
          return String(t.year);
      }
    },
  };
  calendars.set(timeZone, calendar);
  return calendar;
}

const DAY_MS = 86_400_000;

/** ISO 8601 week of a calendar date: weeks start on Monday, week 1 holds the year's first Thursday. */
export function isoWeek(year: number, month: number, day: number): { isoYear: number; week: number } {
  const date = Date.UTC(year, month - 1, day);
  const weekdayFromMonday = (new Date(date).getUTCDay() + 6) % 7;
  const thursday = date + (3 - weekdayFromMonday) * DAY_MS;
  const isoYear = new Date(thursday).getUTCFullYear();
  const week = Math.floor((thursday - Date.UTC(isoYear, 0, 1)) / DAY_MS / 7) + 1;
  return { isoYear, week };
}

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

import cron, { type ScheduledTask } from 'node-cron';
import { formatIssuePath, type Logger, type Plan } from '@lifeboat/shared';
import type { Catalog } from './catalog/catalog.js';

export interface ScheduledWork {
  backup(planId: string): void;
  drill(planId: string): void;
  /** Retention and garbage collection for every plan. */
  prune(): void;
}

/** node-cron only ticks; what a tick does (queue a job unless one is active) lives in the job service. */
export class Scheduler {
  /** Keyed "backup:<plan>" and "drill:<plan>". */
  private readonly tasks = new Map<string, { key: string; task: ScheduledTask }>();
  private pruneTask: ScheduledTask | null = null;

  constructor(
    private readonly catalog: Catalog,
    private readonly work: ScheduledWork,
    private readonly log: Logger,
    /** When retention runs (server time); daily by default. */
    private readonly pruneSchedule = '17 4 * * *',
  ) {}

  /** Makes the running cron tasks match the plans in the catalog. */
  sync(): void {
    const wanted = new Map<string, { expr: string; timezone?: string; run: () => void; plan: string; what: string }>();
    for (const { plan } of this.catalog.listPlans()) {
      const tz = plan.timezone ? { timezone: plan.timezone } : {};
      if (plan.schedule) wanted.set(`backup:${plan.id}`, { expr: plan.schedule, ...tz, run: () => this.work.backup(plan.id), plan: plan.id, what: 'backup' });
      if (plan.drill?.schedule) wanted.set(`drill:${plan.id}`, { expr: plan.drill.schedule, ...tz, run: () => this.work.drill(plan.id), plan: plan.id, what: 'drill' });
    }
    for (const [name, entry] of this.tasks) {
      const want = wanted.get(name);
      if (!want || `${want.expr}|${want.timezone ?? ''}` !== entry.key) {
        void entry.task.destroy();
        this.tasks.delete(name);
      }
    }
    for (const [name, want] of wanted) {
      if (this.tasks.has(name)) continue;
      const task = cron.schedule(want.expr, want.run, { name, ...(want.timezone ? { timezone: want.timezone } : {}), suppressMissedWarning: true });
      this.tasks.set(name, { key: `${want.expr}|${want.timezone ?? ''}`, task });
      this.log.info(`${want.what} scheduled`, { plan: want.plan, schedule: want.expr, timezone: want.timezone, next: task.getNextRun()?.toISOString() });
    }
    this.pruneTask ??= cron.schedule(this.pruneSchedule, () => this.work.prune(), { name: 'prune', suppressMissedWarning: true });
  }

  stop(): void {
    for (const { task } of this.tasks.values()) void task.destroy();
    this.tasks.clear();
    void this.pruneTask?.destroy();
    this.pruneTask = null;
  }
}

/** node-cron's own check of each schedule, as "path: problem" lines like the plan schema's. */
export function scheduleProblems(plans: Plan[]): string[] {
  const problems: string[] = [];
  plans.forEach((plan, i) => {
    for (const [field, expr] of [['schedule', plan.schedule], ['drill.schedule', plan.drill?.schedule]] as const) {
      if (!expr) continue;
      const result = cron.validateDetailed(expr);
      if (!result.valid) {
        const why = result.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
        problems.push(`${formatIssuePath(['plans', i, ...field.split('.')])}: invalid cron expression "${expr}" (${why})`);
      }
    }
  });
  return problems;
}

import cron, { type ScheduledTask } from 'node-cron';
import { formatIssuePath, type Logger, type Plan } from '@lifeboat/shared';
import type { Catalog } from './catalog/catalog.js';

/** node-cron only ticks; what a tick does (queue a job unless one is active) lives in the job service. */
export class Scheduler {
  private readonly tasks = new Map<string, { key: string; task: ScheduledTask }>();

  constructor(
    private readonly catalog: Catalog,
    private readonly onTick: (planId: string) => void,
    private readonly log: Logger,
  ) {}

  /** Makes the running cron tasks match the plans in the catalog. */
  sync(): void {
    const wanted = new Map(this.catalog.listPlans().filter((r) => r.plan.schedule).map((r) => [r.plan.id, r.plan]));
    for (const [id, entry] of this.tasks) {
      const plan = wanted.get(id);
      if (!plan || scheduleKey(plan) !== entry.key) {
        void entry.task.destroy();
        this.tasks.delete(id);
      }
    }
    for (const [id, plan] of wanted) {
      if (this.tasks.has(id)) continue;
      const task = cron.schedule(plan.schedule!, () => this.onTick(id), {
        name: `plan:${id}`,
        ...(plan.timezone ? { timezone: plan.timezone } : {}),
        suppressMissedWarning: true,
      });
      this.tasks.set(id, { key: scheduleKey(plan), task });
      this.log.info('plan scheduled', { plan: id, schedule: plan.schedule, timezone: plan.timezone, next: task.getNextRun()?.toISOString() });
    }
  }

  nextRun(planId: string): Date | null {
    return this.tasks.get(planId)?.task.getNextRun() ?? null;
  }

  stop(): void {
    for (const { task } of this.tasks.values()) void task.destroy();
    this.tasks.clear();
  }
}

function scheduleKey(plan: Plan): string {
  return `${plan.schedule}|${plan.timezone ?? ''}`;
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

import { z } from 'zod';
import { parseDuration } from './duration.js';
import { AbsolutePath, DatabaseHost, DatabaseName, DatabaseUser, EnvName, Labels, Port, SafeName, TableName } from './ids.js';

/** A duration written as in plans: "26h", "7d", "1d12h". */
export const Duration = z.string().refine((s) => parseDuration(s) !== null, 'a duration such as "90s", "15m", "26h", "7d"');

/**
 * Cron with 5 fields (minute precision) or 6 (seconds first), as node-cron takes them.
 * The server checks it once more with node-cron itself before accepting a plan.
 */
export const CronExpression = z
  .string()
  .refine((s) => /^\S+(\s+\S+){4,5}$/.test(s.trim()), 'a cron expression with 5 or 6 fields, e.g. "0 3 * * *"');

export const TimeZone = z.string().refine((tz) => {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}, 'an IANA time zone such as "Europe/Berlin"');

export const FilesStepOptions = z
  .object({
    paths: z.array(AbsolutePath).min(1, 'at least one path'),
    /** Glob patterns (minimatch) matched against absolute paths, e.g. "**\/*.tmp" or "/var/www/cache/**". */
    exclude: z.array(z.string().min(1)).default([]),
  })
  .strict();
export type FilesStepOptions = z.infer<typeof FilesStepOptions>;

/** Where a database password comes from on the agent: a file (0600) or the agent's environment; never the plan. */
const passwordSource = {
  passwordFile: AbsolutePath.optional(),
  passwordEnv: EnvName.optional(),
};
const onePasswordSource = (o: { passwordFile?: string; passwordEnv?: string }) => !(o.passwordFile && o.passwordEnv);
const onePasswordMessage = { message: 'give passwordFile or passwordEnv, not both' };

export const PostgresStepOptions = z
  .object({
    database: DatabaseName,
    host: DatabaseHost.default('127.0.0.1'),
    port: Port.default(5432),
    user: DatabaseUser.default('postgres'),
    ...passwordSource,
    /** Only these schemas (pg_dump --schema). */
    schemas: z.array(TableName).optional(),
    /** Tables left out (pg_dump --exclude-table), e.g. "public.sessions". */
    excludeTables: z.array(TableName).optional(),
    /** Also back up roles and tablespaces (pg_dumpall --globals-only), as an artifact of its own. */
    globals: z.boolean().default(false),
  })
  .strict()
  .refine(onePasswordSource, onePasswordMessage);
export type PostgresStepOptions = z.infer<typeof PostgresStepOptions>;

export const MysqlStepOptions = z
  .object({
    /** One or more databases, or "all" (every database but the server's own schemas). */
    databases: z.union([z.array(DatabaseName).min(1), z.literal('all')]),
    host: DatabaseHost.default('127.0.0.1'),
    port: Port.default(3306),
    user: DatabaseUser.default('root'),
    ...passwordSource,
    /** Tables left out, as "database.table" (mariadb-dump --ignore-table). */
    excludeTables: z.array(TableName).optional(),
  })
  .strict()
  .refine(onePasswordSource, onePasswordMessage);
export type MysqlStepOptions = z.infer<typeof MysqlStepOptions>;

export const SqliteStepOptions = z.object({ path: AbsolutePath }).strict();
export type SqliteStepOptions = z.infer<typeof SqliteStepOptions>;

export const CommandStepOptions = z
  .object({
    /** A name for the artifact, e.g. "mongodb". */
    name: SafeName,
    /** argv, run without a shell; its standard output is the artifact. */
    run: z.array(z.string().min(1).refine((s) => !/[\0]/.test(s), 'no NUL characters')).min(1, 'at least the program'),
    /** argv that takes the artifact on standard input to restore it (optional). */
    restore: z.array(z.string().min(1)).min(1).optional(),
    timeout: Duration.default('6h'),
    cwd: AbsolutePath.optional(),
  })
  .strict();
export type CommandStepOptions = z.infer<typeof CommandStepOptions>;

/** Each step names exactly one source. A new source is one more optional key here and one file in agent/src/sources. */
const stepSources = {
  postgres: PostgresStepOptions,
  mysql: MysqlStepOptions,
  sqlite: SqliteStepOptions,
  command: CommandStepOptions,
  files: FilesStepOptions,
};
export type StepKind = keyof typeof stepSources;
export const StepKinds = Object.keys(stepSources) as StepKind[];

export const Step = z
  .object({
    postgres: PostgresStepOptions.optional(),
    mysql: MysqlStepOptions.optional(),
    sqlite: SqliteStepOptions.optional(),
    command: CommandStepOptions.optional(),
    files: FilesStepOptions.optional(),
  })
  .strict()
  .superRefine((step, ctx) => {
    const kinds = Object.keys(step).filter((k) => (step as Record<string, unknown>)[k] !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: `a step names exactly one source (${StepKinds.join(', ')}), found ${kinds.length === 0 ? 'none' : kinds.join(', ')}`,
      });
    }
  });
export type Step = z.infer<typeof Step>;

export function stepKind(step: Step): StepKind {
  return (Object.keys(step) as StepKind[]).find((k) => step[k] !== undefined)!;
}

/**
 * An application preset: the agent reads the application's own configuration and expands it to steps
 * (dumps first, then files). The plan names only where the application lives.
 */
export const RecipeNames = ['civicrm', 'chatwoot', 'pydio-cells', 'liferay', 'vm'] as const;
export const Recipe = z
  .object({
    name: z.enum(RecipeNames),
    /** Where the application lives: CiviCRM's civicrm.settings.php or its site root, Chatwoot's install dir, Cells' working dir, Liferay Home. */
    path: AbsolutePath.optional(),
    /** vm: paths to archive. Other recipes: extra paths to add. */
    paths: z.array(AbsolutePath).optional(),
    exclude: z.array(z.string().min(1)).optional(),
    /** vm: databases to dump first, as steps. */
    databases: z.array(z.union([
      z.object({ postgres: PostgresStepOptions }).strict(),
      z.object({ mysql: MysqlStepOptions }).strict(),
      z.object({ sqlite: SqliteStepOptions }).strict(),
    ])).optional(),
    /** A password file for the database when the application's config holds none the agent may use. */
    passwordFile: AbsolutePath.optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.name === 'vm' && !r.paths?.length && !r.databases?.length) ctx.addIssue({ code: 'custom', path: ['paths'], message: 'the vm recipe needs paths or databases' });
    if (r.name !== 'vm' && !r.path) ctx.addIssue({ code: 'custom', path: ['path'], message: `the ${r.name} recipe needs the application's path` });
  });
export type Recipe = z.infer<typeof Recipe>;

const KeepCount = z.number().int().min(0);
export const RetentionPolicy = z
  .object({
    keepLast: KeepCount.optional(),
    keepHourly: KeepCount.optional(),
    keepDaily: KeepCount.optional(),
    keepWeekly: KeepCount.optional(),
    keepMonthly: KeepCount.optional(),
    keepYearly: KeepCount.optional(),
    keepWithin: Duration.optional(),
  })
  .strict();
export type RetentionPolicy = z.infer<typeof RetentionPolicy>;

/** A plan's own drill check: SQL that must return true in the restored database, or a command that must exit 0 in the restored tree. */
export const DrillCheck = z.union([
  z.object({ sql: z.string().min(1) }).strict(),
  z.object({ command: z.array(z.string().min(1)).min(1) }).strict(),
]);

export type DrillCheck = z.infer<typeof DrillCheck>;

export const DrillPolicy = z
  .object({
    schedule: CronExpression.optional(),
    on: z.object({ labels: Labels }).strict().default({ labels: { role: 'drill' } }),
    allowSourceAgent: z.boolean().default(false),
    checks: z.array(DrillCheck).default([]),
  })
  .strict();

/**
 * zstd level for a plan's chunks, or "off". Capped at 9: compressing an 8 MiB chunk takes zstd 11 MiB of tables at
 * 9 but 40-80 MiB at 12-19, per thread, past the agent's memory budget; and on the benchmark's data 6 and 9 store 1.2% and
 * 1.8% less than 3 for 2.6 and 4 times its CPU, 1 stores 1.9% more for 0.75 of it (bench/RESULTS.md).
 */
export const CompressionLevel = z.union([z.literal('off'), z.number().int().min(1, 'a zstd level from 1 to 9, or "off"').max(9, 'a zstd level from 1 to 9, or "off" (higher levels need too much memory)')], {
  error: 'a zstd level from 1 to 9, or "off"',
});
export const DEFAULT_COMPRESSION_LEVEL = 3;

/** The level uploads use: 0 for "off" (chunks stored as they are). */
export function zstdLevel(compression: z.infer<typeof CompressionLevel>): number {
  return compression === 'off' ? 0 : compression;
}

export const Plan = z
  .object({
    id: SafeName,
    /** The agent's name, as given at enrollment. */
    agent: SafeName,
    /** Server-side cron; without it the plan runs only when asked (`lifeboat backup now`). */
    schedule: CronExpression.optional(),
    timezone: TimeZone.optional(),
    /** A plan whose newest good backup is older than this is stale. */
    rpo: Duration.optional(),
    /** A job running longer than this is failed and cancelled on the agent. */
    timeout: Duration.default('12h'),
    /** A scheduled run that could not start within this time (agent offline) is dropped, not run late. */
    window: Duration.default('24h'),
    steps: z.array(Step).min(1, 'at least one step').optional(),
    /** Stands in for steps: expanded on the agent from the application's own configuration. */
    recipe: Recipe.optional(),
    retention: RetentionPolicy.optional(),
    drill: DrillPolicy.optional(),
    /** zstd level of the plan's chunks (chunks that do not shrink are stored as they are, whatever the level). */
    compression: CompressionLevel.default(DEFAULT_COMPRESSION_LEVEL),
  })
  .strict()
  .superRefine((plan, ctx) => {
    if (!plan.steps && !plan.recipe) ctx.addIssue({ code: 'custom', path: ['steps'], message: 'required (or a recipe)' });
    if (plan.steps && plan.recipe) ctx.addIssue({ code: 'custom', path: ['recipe'], message: 'give steps or a recipe, not both' });
  });
export type Plan = z.infer<typeof Plan>;
export type PlanInput = z.input<typeof Plan>;

export const PlanFile = z
  .object({ plans: z.array(Plan).min(1, 'at least one plan') })
  .strict()
  .superRefine((file, ctx) => {
    const seen = new Map<string, number>();
    file.plans.forEach((plan, i) => {
      const first = seen.get(plan.id);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['plans', i, 'id'], message: `duplicate plan id "${plan.id}" (also plans[${first}])` });
      else seen.set(plan.id, i);
    });
  });
export type PlanFile = z.infer<typeof PlanFile>;

/** Renders a zod path as people write it: plans[0].steps[1].files.paths */
export function formatIssuePath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || '(root)';
}

/** Every problem of a failed parse, one line each, "path: message". */
export function listIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => `${formatIssuePath(issue.path)}: ${issue.message}`);
}

/** Parse options that say "required" for a missing field instead of zod's type message. */
export const parseOptions = {
  error: (issue: { input?: unknown; code?: string }) =>
    issue.input === undefined && issue.code === 'invalid_type' ? 'required' : undefined,
} as const;

export type ParseResult<T> = { ok: true; value: T } | { ok: false; problems: string[] };

export function parsePlanFile(data: unknown): ParseResult<PlanFile> {
  const result = PlanFile.safeParse(data, parseOptions);
  return result.success ? { ok: true, value: result.data } : { ok: false, problems: listIssues(result.error) };
}

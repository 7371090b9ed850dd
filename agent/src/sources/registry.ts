import { LifeboatError, stepKind, type ArtifactKind, type RestoreTarget, type Step } from '@lifeboat/shared';
import type { Source } from './source.js';

/**
 * One line per source: a new database type is one new file and one line here. Sources load on first use, so
 * an agent that only archives files never loads the database clients (memory on small VMs).
 */
const sources: Record<ArtifactKind, () => Promise<Source<never>>> = {
  postgres: async () => (await import('./postgres.js')).postgresSource as Source<never>,
  'postgres-globals': async () => (await import('./postgres-globals.js')).postgresGlobalsSource as Source<never>,
  mysql: async () => (await import('./mysql.js')).mysqlSource as Source<never>,
  sqlite: async () => (await import('./sqlite.js')).sqliteSource as Source<never>,
  command: async () => (await import('./command.js')).commandSource as Source<never>,
  files: async () => (await import('./files.js')).filesSource as Source<never>,
};

export async function sourceFor(kind: ArtifactKind): Promise<Source<never>> {
  const load = sources[kind] as (() => Promise<Source<never>>) | undefined;
  if (!load) throw new LifeboatError('bad_request', `this agent cannot handle "${kind}" artifacts; upgrade it`);
  return load();
}

/** One artifact to produce: which source, with which options. */
export interface ArtifactTask {
  kind: ArtifactKind;
  options: unknown;
}

/** A plan step becomes one artifact, or more where a source needs several (PostgreSQL globals beside the database). */
export function artifactTasks(step: Step): ArtifactTask[] {
  const kind = stepKind(step);
  const options = step[kind]!;
  if (kind === 'postgres' && step.postgres!.globals) return [{ kind: 'postgres-globals', options }, { kind, options }];
  return [{ kind, options }];
}

/** The target an artifact restores into: the first of its source's preferred kinds that the request names. */
export async function targetFor(kind: ArtifactKind, targets: readonly RestoreTarget[]): Promise<RestoreTarget> {
  const source = await sourceFor(kind);
  for (const wanted of source.targets) {
    const target = targets.find((t) => t.kind === wanted);
    if (target) return target;
  }
  const options = source.targets.map((k) => (k === 'dir' ? '--to DIR' : `--to-${k} URL`)).join(' or ');
  throw new LifeboatError('restore_refused', `the snapshot holds a ${kind} artifact; give ${options} to restore it (or leave it out with --artifact)`);
}

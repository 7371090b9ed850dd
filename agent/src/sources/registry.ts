import { LifeboatError, stepKind, type ArtifactKind, type RestoreTarget, type Step } from '@lifeboat/shared';
import { commandSource } from './command.js';
import { filesSource } from './files.js';
import { mysqlSource } from './mysql.js';
import { postgresGlobalsSource } from './postgres-globals.js';
import { postgresSource } from './postgres.js';
import { sqliteSource } from './sqlite.js';
import type { Source } from './source.js';

/** One line per source: a new database type is one new file and one line here. */
const sources: Record<ArtifactKind, Source<never>> = {
  postgres: postgresSource as Source<never>,
  'postgres-globals': postgresGlobalsSource as Source<never>,
  mysql: mysqlSource as Source<never>,
  sqlite: sqliteSource as Source<never>,
  command: commandSource as Source<never>,
  files: filesSource as Source<never>,
};

export function sourceFor(kind: ArtifactKind): Source<never> {
  const source = sources[kind] as Source<never> | undefined;
  if (!source) throw new LifeboatError('bad_request', `this agent cannot handle "${kind}" artifacts; upgrade it`);
  return source;
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
export function targetFor(kind: ArtifactKind, targets: readonly RestoreTarget[]): RestoreTarget {
  const source = sourceFor(kind);
  for (const wanted of source.targets) {
    const target = targets.find((t) => t.kind === wanted);
    if (target) return target;
  }
  const options = source.targets.map((k) => (k === 'dir' ? '--to DIR' : `--to-${k} URL`)).join(' or ');
  throw new LifeboatError('restore_refused', `the snapshot holds a ${kind} artifact; give ${options} to restore it (or leave it out with --artifact)`);
}

import type { ArtifactKind, Step, StepKind } from '@lifeboat/shared';
import { filesSource } from './files.js';
import type { Source } from './source.js';

/** One line per source: a new database type is one new file and one line here. */
const sources: { [K in StepKind]: Source<NonNullable<Step[K]>> } = {
  files: filesSource,
};

export function sourceForStep<K extends StepKind>(kind: K): Source<NonNullable<Step[K]>> {
  return sources[kind];
}

export function sourceForArtifact(kind: ArtifactKind): Source<never> {
  return sources[kind] as Source<never>;
}

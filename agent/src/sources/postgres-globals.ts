import { LifeboatError, type PostgresStepOptions } from '@lifeboat/shared';
import type { Source } from './source.js';

/** Placeholder until the postgres-globals source lands. */
export const postgresGlobalsSource: Source<PostgresStepOptions> = {
  kind: 'postgres-globals',
  targets: ['dir'],
  backup: () => Promise.reject(new LifeboatError('bad_request', 'postgres-globals backups are not available on this agent yet')),
  restore: () => Promise.reject(new LifeboatError('bad_request', 'postgres-globals restores are not available on this agent yet')),
};

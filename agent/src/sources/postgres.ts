import { LifeboatError, type PostgresStepOptions } from '@lifeboat/shared';
import type { Source } from './source.js';

/** Placeholder until the postgres source lands. */
export const postgresSource: Source<PostgresStepOptions> = {
  kind: 'postgres',
  targets: ['dir'],
  backup: () => Promise.reject(new LifeboatError('bad_request', 'postgres backups are not available on this agent yet')),
  restore: () => Promise.reject(new LifeboatError('bad_request', 'postgres restores are not available on this agent yet')),
};

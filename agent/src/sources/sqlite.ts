import { LifeboatError, type SqliteStepOptions } from '@lifeboat/shared';
import type { Source } from './source.js';

/** Placeholder until the sqlite source lands. */
export const sqliteSource: Source<SqliteStepOptions> = {
  kind: 'sqlite',
  targets: ['dir'],
  backup: () => Promise.reject(new LifeboatError('bad_request', 'sqlite backups are not available on this agent yet')),
  restore: () => Promise.reject(new LifeboatError('bad_request', 'sqlite restores are not available on this agent yet')),
};

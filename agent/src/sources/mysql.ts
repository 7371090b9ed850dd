import { LifeboatError, type MysqlStepOptions } from '@lifeboat/shared';
import type { Source } from './source.js';

/** Placeholder until the mysql source lands. */
export const mysqlSource: Source<MysqlStepOptions> = {
  kind: 'mysql',
  targets: ['dir'],
  backup: () => Promise.reject(new LifeboatError('bad_request', 'mysql backups are not available on this agent yet')),
  restore: () => Promise.reject(new LifeboatError('bad_request', 'mysql restores are not available on this agent yet')),
};

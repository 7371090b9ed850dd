import { LifeboatError, type CommandStepOptions } from '@lifeboat/shared';
import type { Source } from './source.js';

/** Placeholder until the command source lands. */
export const commandSource: Source<CommandStepOptions> = {
  kind: 'command',
  targets: ['dir'],
  backup: () => Promise.reject(new LifeboatError('bad_request', 'command backups are not available on this agent yet')),
  restore: () => Promise.reject(new LifeboatError('bad_request', 'command restores are not available on this agent yet')),
};

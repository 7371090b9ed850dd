import type { Recipe, Step } from '@lifeboat/shared';
import { filesStep, finishSteps } from './common.js';

/**
 * The generic case (after the VM host's "Backing Up Important Data"): the listed databases are dumped first —
 * "the database dump should be made first" — then the listed paths are archived. The paths are the operator's
 * own list, so a missing one fails the backup (the files source checks) rather than being skipped.
 * The recipe's passwordFile serves the databases that name no password source of their own.
 */
export function expandVm(recipe: Recipe): Step[] {
  const steps: unknown[] = [];
  for (const db of recipe.databases ?? []) {
    if ('postgres' in db) steps.push({ postgres: withPassword(db.postgres, recipe) });
    else if ('mysql' in db) steps.push({ mysql: withPassword(db.mysql, recipe) });
    else steps.push({ sqlite: db.sqlite });
  }
  const files = filesStep([...(recipe.path ? [recipe.path] : [])], recipe);
  if (files) steps.push(files);
  return finishSteps('vm', 'the plan', steps);
}

function withPassword<T extends { passwordFile?: string | undefined; passwordEnv?: string | undefined }>(options: T, recipe: Recipe): T {
  if (options.passwordFile || options.passwordEnv || !recipe.passwordFile) return options;
  return { ...options, passwordFile: recipe.passwordFile };
}

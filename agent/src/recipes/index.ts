import type { Recipe, Step } from '@lifeboat/shared';
import type { JobContext } from '../sources/source.js';
import { expandChatwoot } from './chatwoot.js';
import { expandCivicrm, readCivicrmDirectorySettings } from './civicrm.js';
import { findLocalMysqlSocket, hostResolves, type RecipeEnv } from './common.js';
import { expandLiferay } from './liferay.js';
import { afterPydioRestore, expandPydioCells } from './pydio-cells.js';
import { DEFAULT_RECIPE_SECRETS_DIR, fileSecretStore } from './secrets.js';
import { expandVm } from './vm.js';

export { DEFAULT_RECIPE_SECRETS_DIR } from './secrets.js';
export type { RecipeEnv } from './common.js';

/** What a caller may change about how a recipe runs; every field has a default for the agent. */
export interface ExpandOptions extends Partial<Omit<RecipeEnv, 'ctx'>> {
  /**
   * Where passwords read from applications' configs are kept (0700, files 0600), when `secrets` is not given.
   * Default: /var/lib/lifeboat-agent/recipe-secrets (the agent's default state directory).
   */
  secretsDir?: string;
}

export function recipeEnv(ctx: JobContext, options: ExpandOptions = {}): RecipeEnv {
  return {
    ctx,
    secrets: options.secrets ?? fileSecretStore(options.secretsDir ?? DEFAULT_RECIPE_SECRETS_DIR),
    online: options.online ?? true,
    fetch: options.fetch ?? globalThis.fetch,
    civicrmDirectorySettings: options.civicrmDirectorySettings ?? readCivicrmDirectorySettings,
    now: options.now ?? (() => new Date()),
    resolves: options.resolves ?? hostResolves,
    localMysqlSocket: options.localMysqlSocket ?? findLocalMysqlSocket,
  };
}

/**
 * Expands a recipe into steps by reading the application's own configuration on this machine: dumps first,
 * then files, each step validated by the plan schema. Passwords found in the configuration reach the steps
 * only as a `passwordFile` (see secrets.ts). A missing or unreadable configuration fails with the file (and the
 * line) and what to do.
 */
export async function expandRecipe(recipe: Recipe, ctx: JobContext, options: ExpandOptions = {}): Promise<Step[]> {
  const env = recipeEnv(ctx, options);
  switch (recipe.name) {
    case 'civicrm':
      return expandCivicrm(recipe, env);
    case 'chatwoot':
      return expandChatwoot(recipe, env);
    case 'pydio-cells':
      return expandPydioCells(recipe, env);
    case 'liferay':
      return expandLiferay(recipe, env);
    case 'vm':
      return expandVm(recipe);
  }
}

/** A recipe's work after its files are restored (e.g. rewriting hosts); returns lines for the summary. */
export async function afterRestore(recipe: Recipe['name'], dir: string, options: { rewriteHosts: { from: string; to: string }[] }, ctx: JobContext): Promise<string[]> {
  if (recipe === 'pydio-cells') return afterPydioRestore(dir, options.rewriteHosts, ctx);
  if (options.rewriteHosts.length) {
    const message = `--rewrite-host applies to pydio-cells restores; the ${recipe} recipe has no hosts to rewrite, nothing was changed`;
    ctx.warn(message);
    return [message];
  }
  return [];
}

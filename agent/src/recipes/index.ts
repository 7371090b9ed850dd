import { LifeboatError, type Recipe, type Step } from '@lifeboat/shared';
import type { JobContext } from '../sources/source.js';

/** Expands a recipe into steps by reading the application's own configuration on this machine. */
export async function expandRecipe(recipe: Recipe, ctx: JobContext): Promise<Step[]> {
  void ctx;
  throw new LifeboatError('bad_request', `recipe ${recipe.name} is not available on this agent yet`);
}

/** A recipe's work after its files are restored (e.g. rewriting hosts); returns lines for the summary. */
export async function afterRestore(recipe: Recipe['name'], dir: string, options: { rewriteHosts: { from: string; to: string }[] }, ctx: JobContext): Promise<string[]> {
  void recipe;
  void dir;
  void options;
  void ctx;
  return [];
}

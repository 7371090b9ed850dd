import { execFileSync } from 'node:child_process';
import { statfsSync } from 'node:fs';

/** How many bytes of a file the page cache holds (util-linux fincore): 0 for one written or read past it (O_DIRECT). */
export function pageCacheBytes(file: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
}

/** Whether `dir` is on tmpfs, whose files live in the page cache whatever the flags they were written with. */
export function livesInPageCache(dir: string): boolean {
  const TMPFS_MAGIC = 0x01021994;
  return statfsSync(dir).type === TMPFS_MAGIC;
}

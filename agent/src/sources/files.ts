import { chmod } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { formatBytes, type DirTarget, type FilesStepOptions } from '@lifeboat/shared';
import { archivePaths } from '../archive/tar-writer.js';
import { abortReason } from '../fs-errors.js';
import { DEFAULT_RESTORE_LIMITS, extractTar, restoreError, type FilesRestoreLimits } from '../restore/extract.js';
import { prepareTarget } from '../restore/target.js';
import type { BackupStream, JobContext, RestoreOptions, RestoreSummary, Source } from './source.js';

/**
 * The files source: a tar stream of paths on the agent (archive/tar-writer.ts), and its safe extraction
 * (restore/extract.ts) into a prepared target (restore/target.ts).
 */

export { DEFAULT_RESTORE_LIMITS, type FilesRestoreLimits };

export function createFilesSource(limits: Partial<FilesRestoreLimits> = {}): Source<FilesStepOptions> {
  const caps: FilesRestoreLimits = { ...DEFAULT_RESTORE_LIMITS, ...limits };
  return {
    kind: 'files',
    backup: backupFiles,
    targets: ['dir'],
    // A source is only given one of its `targets`.
    restore: (input, target, options, ctx) => restoreFiles(input, target as DirTarget, options, ctx, caps),
  };
}

export const filesSource: Source<FilesStepOptions> = createFilesSource();

async function backupFiles(options: FilesStepOptions, ctx: JobContext): Promise<BackupStream> {
  const archive = await archivePaths(options.paths, options.exclude, ctx);
  return {
    kind: 'files',
    name: archive.roots.join(' '),
    // Made only if read: the upload reads `pieces`.
    get stream() {
      return archive.stream;
    },
    pieces: archive.pieces,
    metadata: archive.metadata,
    settle: async (stored) => {
      await archive.settle(stored);
      if (!ctx.filesCache) return undefined;
      const { filesRead, filesReused } = archive.reads;
      return `${filesRead} file(s) read, ${filesReused} unchanged since the last backup (not read)`;
    },
  };
}

async function restoreFiles(
  input: Readable,
  target: DirTarget,
  options: RestoreOptions,
  ctx: JobContext,
  limits: FilesRestoreLimits,
): Promise<RestoreSummary> {
  // An input that fails while the target is prepared is seen when extraction reads it (an errored stream rejects
  // its reading), not as an uncaught exception meanwhile.
  input.on('error', () => {});
  try {
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    const prepared = await prepareTarget(target);
    // Made for this restore, or found empty (a target that is not empty needs --force).
    const fresh = prepared.created || !target.force;
    const extracted = await extractTar(input, { root: prepared.root, path: target.path, fresh }, limits, options, ctx);
    // Kept 0700 while being filled, so no one else could plant anything in it meanwhile; an archive of "/"
    // carries the target's own mode, already set.
    if (prepared.created && !extracted.targetModeSet) await chmod(prepared.root, 0o755);
    return {
      summary: `restored ${extracted.restored} entries (${formatBytes(extracted.restoredBytes)}) into ${target.path}`,
      skipped: extracted.skipped,
    };
  } catch (err) {
    input.destroy();
    throw restoreError(err);
  }
}

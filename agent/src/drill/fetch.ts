import type { Readable } from 'node:stream';
import { LifeboatError, type ArtifactForRestore, type ChunkKeys } from '@lifeboat/shared';
import { downloadArtifact } from '../download.js';
import type { ServerLink } from '../link.js';
import type { JobContext } from '../sources/source.js';

/** How an artifact's download ended, as the drill reports it in "chunks and stream verified". */
export type FetchOutcome =
  /** Every chunk arrived, decoded and matched its id; the chunk list matched its recorded digest, the stream its size. */
  | { state: 'verified' }
  /** A chunk (or the chunk list, or the size) failed verification, was missing, or the job was cancelled. */
  | { state: 'failed'; error: LifeboatError }
  /** The consumer stopped reading before the end (its restore failed first): not verified to the end. */
  | { state: 'unfinished' };

export interface Fetch {
  stream: Readable;
  /** Call once the consumer is done with `stream` (its restore returned or threw). */
  outcome(): FetchOutcome;
}

/**
 * downloadArtifact (download.ts) as a drill needs it: besides the stream, how the download itself ended,
 * told apart from how the restore that read it ended.
 */
export function fetchArtifact(link: ServerLink, artifact: ArtifactForRestore, ctx: JobContext, keys: ChunkKeys | null): Fetch {
  const download = downloadArtifact(link, artifact, ctx, keys);
  let error: LifeboatError | undefined;
  let ended = false;
  download.once('end', () => (ended = true));
  download.once('error', (err: Error) => {
    error = err instanceof LifeboatError ? err : new LifeboatError('integrity', `artifact ${artifact.name}: ${err.message}`);
  });
  return {
    stream: download,
    outcome: () => {
      if (error) return { state: 'failed', error };
      return ended ? { state: 'verified' } : { state: 'unfinished' };
    },
  };
}

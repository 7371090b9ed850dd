import type { Readable } from 'node:stream';
import type { FilesCacheOptions } from '../archive/files-cache.js';
import type { ArtifactForRestore, ArtifactKind, ArtifactMetadata, ChunkRef, ChunkUse, Logger, RestoreTarget } from '@lifeboat/shared';

/** What a source may do while it runs: report, warn, and stop when the job is cancelled. */
export interface JobContext {
  jobId: string;
  /** Aborted when the job is cancelled, times out or the connection to the server is lost. */
  signal: AbortSignal;
  log: Logger;
  /** A problem the job survives (an unreadable file): listed in the job's warnings, never silently dropped. */
  warn(message: string): void;
  /** Where the work is; bytes so far and, when known, the total. */
  progress(phase: string, bytes: number, totalBytes?: number): void;
  /** For a files backup: the files cache of this plan step, so unchanged files are not read again. */
  filesCache?: FilesCacheOptions;
}

/**
 * A stream with its seams, as the files source produces it: bytes; the end of a segment (a chunk ends there,
 * and the segment learns the chunks it became, for the files cache); or chunks reused from the files cache
 * without reading what they hold. Bytes are lent: the producer may reuse their memory once the next piece is
 * asked for, so a consumer copies what it keeps (the chunker does).
 */
export type StreamPiece = Buffer | SegmentEnd | ReusedChunks;

export interface SegmentEnd {
  type: 'segment-end';
  /** Given the chunks the segment's bytes became, in order (settles once they are cut and hashed). */
  onChunks?(chunks: Promise<ChunkRef[]>): void;
}

export interface ReusedChunks {
  type: 'reused';
  chunks: readonly ChunkUse[];
}

/** One artifact's bytes as they are produced. */
export interface BackupStream {
  kind: ArtifactKind;
  /** A name for people, e.g. the archived paths or the database. */
  name: string;
  /** The artifact's bytes. Consumed exactly once, at the consumer's pace (backpressure reaches the producer). */
  stream: Readable;
  /**
   * Settles after `stream` has ended: resolves with what the artifact records about its content, or rejects
   * with a LifeboatError when the artifact is not complete (a child's exit code or signal, a truncated stream).
   * A backup is recorded only when this resolved.
   */
  metadata: Promise<ArtifactMetadata>;
  /**
   * The same artifact with its seams (files source): when present, the upload reads this instead of `stream`
   * (only one of the two is ever consumed).
   */
  pieces?: AsyncIterable<StreamPiece>;
  /**
   * Told whether the artifact was stored, once the upload is over (the files cache is kept or dropped); may
   * answer with a line for the job's summary.
   */
  settle?(stored: boolean): Promise<string | undefined>;
}

export interface RestoreSummary {
  /** One line for people, e.g. "restored 1204 entries (210.4 MiB) into /srv/restore". */
  summary: string;
  /** Entries that were deliberately not restored, each with why. */
  skipped: string[];
}

/**
 * A backup source: one file per kind (files, postgres, mysql, sqlite, command) behind this interface.
 * `backup` fails fast (before any byte moves) on what it can check up front, such as a missing path.
 */
export interface Source<Options> {
  kind: ArtifactKind;
  backup(options: Options, ctx: JobContext): Promise<BackupStream>;
  /** The target kinds this source restores into, preferred first; "dir" writes the artifact as files. */
  targets: readonly RestoreTarget['kind'][];
  /** `target` is always one of `targets`. */
  restore(input: Readable, target: RestoreTarget, options: RestoreOptions, ctx: JobContext): Promise<RestoreSummary>;
}

export interface RestoreOptions {
  /** Restore the recorded uid/gid (as root, for moving a machine); otherwise files belong to the restoring user. */
  preserveOwner: boolean;
  /** The artifact being restored: its name, size and what was recorded at backup (tables, row counts). */
  artifact?: ArtifactForRestore;
  /**
   * Files restores: where to write the backup's per-file manifest (the archive's last entry), a path outside
   * the target (a drill checks the restored tree with it). Unset, the manifest is simply left out.
   */
  keepManifestAt?: string;
}

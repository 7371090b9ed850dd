import { rm } from 'node:fs/promises';
import path from 'node:path';
import { LifeboatError, type ArtifactForRestore, type Logger } from '@lifeboat/shared';
import { makeScratchDir } from '../scratch/common.js';
import { startScratchMariadb, type ScratchMariadb } from '../scratch/mariadb.js';
import { postgresServerBinDir, startScratchPostgres, type ScratchPostgres } from '../scratch/postgres.js';

/**
 * The throwaway places a drill restores into, each started on first use and all torn down by teardown():
 * one PostgreSQL cluster, one MariaDB server, one directory (files, SQLite, command output). Each lives in a
 * scratch directory of its own (scratch/common.ts), so what a killed drill leaves is found and removed by
 * cleanLeftoverScratch at the agent's next start. Nothing here touches anything it did not create.
 */
export class DrillScratch {
  private postgresInstance: Promise<ScratchPostgres> | null = null;
  private mariadbInstance: Promise<ScratchMariadb> | null = null;
  private directory: Promise<string> | null = null;
  private readonly dirTargets = new Set<string>();
  /** Time spent starting servers: it is not part of the restore time (the RTO). */
  startupMs = 0;

  constructor(
    private readonly options: {
      /** Where the scratch directories go; default the system temp dir. Must be reachable by the postgres and mysql users. */
      parentDir?: string;
      /** The PostgreSQL major version the drill's dumps need (see neededPostgresMajor); default the newest installed. */
      postgresMajor?: number;
      log?: Logger;
    } = {},
  ) {}

  /** The scratch PostgreSQL, started on first use. */
  postgres(): Promise<ScratchPostgres> {
    this.postgresInstance ??= this.timed(async () => {
      const majorVersion = await choosePostgresMajor(this.options.postgresMajor);
      return startScratchPostgres({
        majorVersion,
        ...(this.options.parentDir !== undefined ? { parentDir: this.options.parentDir } : {}),
        ...(this.options.log ? { log: this.options.log } : {}),
      });
    });
    return this.postgresInstance;
  }

  /** The scratch MariaDB, started on first use. */
  mariadb(): Promise<ScratchMariadb> {
    this.mariadbInstance ??= this.timed(async () => {
      try {
        return await startScratchMariadb({
          ...(this.options.parentDir !== undefined ? { parentDir: this.options.parentDir } : {}),
          ...(this.options.log ? { log: this.options.log } : {}),
        });
      } catch (err) {
        if (err instanceof LifeboatError) throw err;
        throw new LifeboatError('restore_failed', `cannot start a scratch MariaDB for the drill: ${err instanceof Error ? err.message : String(err)}`);
      }
    });
    return this.mariadbInstance;
  }

  /** The scratch directory, made on first use. */
  dir(): Promise<string> {
    this.directory ??= makeScratchDir('dir', this.options.parentDir).catch((err: unknown) => {
      throw new LifeboatError('restore_failed', `cannot make a scratch directory for the drill: ${err instanceof Error ? err.message : String(err)}`);
    });
    return this.directory;
  }

  /** A fresh, not yet existing directory inside the scratch directory, for one artifact's restore. */
  async dirTarget(label: string): Promise<string> {
    const root = await this.dir();
    const base = label.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[.-]+/, '_').slice(0, 60) || 'artifact';
    let name = base;
    for (let n = 2; this.dirTargets.has(name); n++) name = `${base}-${n}`;
    this.dirTargets.add(name);
    return path.posix.join(root, name);
  }

  /** The scratch PostgreSQL, if this drill started one (never starts it). */
  async startedPostgres(): Promise<ScratchPostgres | null> {
    return this.postgresInstance ? this.postgresInstance.catch(() => null) : null;
  }

  async startedMariadb(): Promise<ScratchMariadb | null> {
    return this.mariadbInstance ? this.mariadbInstance.catch(() => null) : null;
  }

  async startedDir(): Promise<string | null> {
    return this.directory ? this.directory.catch(() => null) : null;
  }

  /**
   * Stops the servers and removes every scratch directory, whatever state they are in; never throws.
   * Returns what could not be removed (cleanLeftoverScratch takes it at the next start).
   */
  async teardown(): Promise<string[]> {
    const problems: string[] = [];
    const [postgres, mariadb, dir] = await Promise.all([this.startedPostgres(), this.startedMariadb(), this.startedDir()]);
    await Promise.all([
      postgres?.stop().catch((err: unknown) => problems.push(`stopping the scratch PostgreSQL in ${postgres.dir}: ${reason(err)}`)),
      mariadb?.stop().catch((err: unknown) => problems.push(`stopping the scratch MariaDB in ${mariadb.dir}: ${reason(err)}`)),
      dir ? rm(dir, { recursive: true, force: true }).catch((err: unknown) => problems.push(`removing ${dir}: ${reason(err)}`)) : undefined,
    ]);
    return problems;
  }

  private timed<T>(start: () => Promise<T>): Promise<T> {
    const began = Date.now();
    const started = start().finally(() => (this.startupMs += Date.now() - began));
    // Awaited by the artifact that needs it; teardown reads it again without throwing.
    started.catch(() => {});
    return started;
  }
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The major version of a server version string ("15.14", "16.2 (Debian …)", "9.6.24" → 9); null when unreadable. */
export function postgresMajor(serverVersion: string): number | null {
  const match = /^(\d+)(?:\.\d+)?/.exec(serverVersion.trim());
  return match ? Number(match[1]) : null;
}

/** The newest PostgreSQL major version the drill's dumps come from: the scratch cluster must be at least that. */
export function neededPostgresMajor(artifacts: readonly ArtifactForRestore[]): number | undefined {
  let needed: number | undefined;
  for (const artifact of artifacts) {
    if (artifact.metadata.kind !== 'postgres') continue;
    const major = postgresMajor(artifact.metadata.serverVersion);
    if (major !== null && (needed === undefined || major > needed)) needed = major;
  }
  return needed;
}

/**
 * The installed server version to restore into: the dump's own major version when installed, else the newest
 * installed, as long as it is not older (pg_restore cannot load a dump into an older server reliably).
 */
export async function choosePostgresMajor(needed: number | undefined, installRoot?: string): Promise<number> {
  if (needed !== undefined) {
    const exact = await postgresServerBinDir(needed, installRoot).catch(() => null);
    if (exact) return exact.major;
  }
  const newest = await postgresServerBinDir(undefined, installRoot);
  if (needed !== undefined && newest.major < needed) {
    throw new LifeboatError(
      'restore_failed',
      `the dump comes from PostgreSQL ${needed}, and the newest PostgreSQL server installed on this drill agent is ${newest.major}: ` +
        `a dump restores only into the same or a newer major version; install postgresql-${needed} (or newer) on the drill agent`,
    );
  }
  return newest.major;
}

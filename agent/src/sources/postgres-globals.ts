import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { LifeboatError, type MetadataOf, type PostgresStepOptions, type RestoreTarget } from '@lifeboat/shared';
import { streamChild } from '../child.js';
import {
  connectForBackup,
  APPLICATION_NAME,
  conninfo,
  dumpToolFor,
  pgToolEnv,
  serverVersion,
  writePassfile,
  type Passfile,
} from '../db/postgres-tools.js';
import { abortReason, throttled } from '../fs-errors.js';
import { backupError, writeDumpFile } from './postgres.js';
import type { BackupStream, JobContext, RestoreOptions, RestoreSummary, Source } from './source.js';

/**
 * The postgres-globals source: roles (with their password hashes) and tablespaces of a PostgreSQL server, from
 * `pg_dumpall --globals-only`, beside a postgres step that says `globals: true`. It is plain SQL that changes
 * the whole server (roles, superuser rights, passwords), so a restore only writes it as a file for a person to
 * review and apply; nothing here ever runs it (and never psql: DESIGN §11).
 */

export type PostgresGlobalsMetadata = MetadataOf<'postgres-globals'>;

export interface PostgresGlobalsSourceSettings {
  /** Where to look for pg_dumpall; default /usr/lib/postgresql/<major>/bin (newest first), then PATH. */
  binDirs?: readonly string[];
}

export const GLOBALS_FILE = 'globals.sql';

export function createPostgresGlobalsSource(settings: PostgresGlobalsSourceSettings = {}): Source<PostgresStepOptions> {
  return {
    kind: 'postgres-globals',
    backup: (options, ctx) => backupGlobals(options, ctx, settings),
    targets: ['dir'],
    restore: restoreGlobals,
  };
}

export const postgresGlobalsSource: Source<PostgresStepOptions> = createPostgresGlobalsSource();

async function backupGlobals(options: PostgresStepOptions, ctx: JobContext, settings: PostgresGlobalsSourceSettings): Promise<BackupStream> {
  const { endpoint, password, client } = await connectForBackup(options, ctx.signal);
  let passfile: Passfile | undefined;
  let handedOver = false;
  try {
    const server = await serverVersion(client);
    const { rows } = await client.query<{ role: string }>("SELECT rolname AS role FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' ORDER BY rolname::text COLLATE \"C\"");
    const roles = rows.map((r) => r.role);
    const tool = await dumpToolFor('pg_dumpall', server, settings.binDirs);
    await client.end();

    passfile = password === undefined ? undefined : await writePassfile(password);
    const dump = streamChild({
      tool: 'pg_dumpall',
      program: tool.path,
      args: [
        '--globals-only',
        '--no-password',
        // pg_dumpall ignores a dbname in --dbname; --database names the one it connects to (DatabaseName in the
        // plan never holds "=" nor a URI, so it cannot be read as a connection string).
        `--database=${options.database}`,
        `--dbname=${conninfo({ host: endpoint.host, port: endpoint.port, user: endpoint.user, application_name: APPLICATION_NAME })}`,
      ],
      env: pgToolEnv({ passwordEnv: options.passwordEnv, passfile }),
      signal: ctx.signal,
      onBytes: throttled((bytes) => ctx.progress('dumping roles', bytes)),
    });
    const check = new SqlDumpCheck();
    const piped = pipeline(dump.stream, check).catch(() => {});
    handedOver = true;
    const metadata = (async (): Promise<PostgresGlobalsMetadata> => {
      try {
        const [dumped, read] = await Promise.allSettled([dump.done, finished(check), piped]);
        if (ctx.signal.aborted) throw abortReason(ctx.signal);
        if (read.status === 'rejected' && read.reason instanceof LifeboatError) throw read.reason;
        if (dumped.status === 'rejected') throw dumped.reason;
        if (read.status === 'rejected') throw read.reason;
        if (dumped.value.stderr) ctx.warn(`pg_dumpall: ${dumped.value.stderr}`);
        return { kind: 'postgres-globals', serverVersion: server.version, roles };
      } catch (err) {
        throw backupError(err, ctx.signal, 'pg_dumpall');
      } finally {
        await passfile?.remove();
      }
    })();
    metadata.catch(() => {});
    return { kind: 'postgres-globals', name: `globals@${options.host}:${options.port}`, stream: check, metadata };
  } catch (err) {
    throw backupError(err, ctx.signal, 'preparing the globals dump');
  } finally {
    await client.end().catch(() => {});
    if (!handedOver) await passfile?.remove();
  }
}

/** pg_dumpall writes SQL that opens with a "--" comment: anything else (or nothing) is not its dump. */
class SqlDumpCheck extends Transform {
  private first: number | null = null;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.first === null && chunk.length > 0) {
      this.first = chunk[0]!;
      if (this.first !== 0x2d) return callback(new LifeboatError('source_failed', 'the output of pg_dumpall is not an SQL dump (it does not start with a "--" comment)'));
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    callback(this.first === null ? new LifeboatError('source_failed', 'pg_dumpall produced no output') : null);
  }
}

async function restoreGlobals(input: Readable, target: RestoreTarget, options: RestoreOptions, ctx: JobContext): Promise<RestoreSummary> {
  if (target.kind !== 'dir') {
    input.destroy();
    throw new LifeboatError('restore_refused', `PostgreSQL globals (roles) are only restored as a file (--to DIR), for a person to review and apply`);
  }
  const recorded = options.artifact?.metadata.kind === 'postgres-globals' ? options.artifact.metadata : undefined;
  const written = await writeDumpFile(input, target, GLOBALS_FILE, ctx);
  const roles = recorded ? ` (${recorded.roles.length} role${recorded.roles.length === 1 ? '' : 's'}${recorded.roles.length ? `: ${recorded.roles.join(', ')}` : ''})` : '';
  return {
    summary:
      `wrote ${written.name}${roles} into ${target.path}; it was NOT applied: it creates and alters roles server-wide` +
      ` (passwords, superuser rights), so a person must review it, then apply it with psql -f ${written.path} (it holds password hashes: keep it private)`,
    skipped: [],
  };
}

import { serve, type ServerType } from '@hono/node-server';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, mkdir, open, readFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { Cipher, createLogger, packKey, readChunkHeader, type Logger } from '@lifeboat/shared';
import { createApp } from './app.js';
import { ENCRYPTION_UNDECIDED, RepositoryEncryption, type SnapshotStorage } from './encryption.js';
import { hashSecret } from './auth.js';
import { Catalog } from './catalog/catalog.js';
import { openCatalogDb } from './catalog/db.js';
import { Hub, type HubOptions } from './hub/hub.js';
import { JobService, type Clock } from './jobs.js';
import { scheduledPrune } from './retention/scheduled.js';
import { Scheduler } from './scheduler.js';
import { FsBackend, type StoreBackend } from '@lifeboat/shared';

export interface ServerOptions {
  dataDir: string;
  /**
   * Where chunks and manifests go: a directory (DATA/store by default; a large disk, or its own mount) or an
   * S3-compatible bucket, s3://bucket/prefix?endpoint=…&region=…&pathStyle=true (credentials from the environment).
   */
  store?: string;
  port: number;
  host: string;
  tlsCert?: string;
  tlsKey?: string;
  clock?: Clock;
  log?: Logger;
  hub?: HubOptions;
  /** How long an unreferenced chunk stays before garbage collection may delete it (24 h by default). */
  gcGraceMs?: number;
  /** Where the one-time admin token announcement goes (stdout by default). */
  announce?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Wires catalog, store, job service, hub, scheduler and the HTTP API onto one listening socket. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const log = options.log ?? createLogger('server');
  const clock = options.clock ?? Date.now;
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  const adminToken = await loadOrCreateAdminToken(options.dataDir, options.announce ?? ((l) => process.stdout.write(l + '\n')));

  const catalog = new Catalog(openCatalogDb(join(options.dataDir, 'catalog.db')));
  const backend = await openBackend(options.store ?? join(options.dataDir, 'store'));
  const encryption = new RepositoryEncryption(backend);
  await encryption.load(() => howSnapshotsAreStored(catalog, backend));
  if (encryption.state === 'undecided') log.warn(ENCRYPTION_UNDECIDED);
  if (encryption.state === 'unencrypted') log.warn('backups are NOT encrypted, as chosen: `lifeboat encryption init` encrypts them from then on');
  const jobs = new JobService(catalog, backend, encryption, clock, log.child('jobs'));
  jobs.recoverAfterRestart();
  const hub = new Hub(catalog, jobs, encryption, clock, log.child('hub'), options.hub);
  const gcGraceMs = options.gcGraceMs ?? 24 * 3_600_000;
  const scheduler = new Scheduler(
    catalog,
    {
      backup(planId) {
        try {
          const { job, created } = jobs.requestBackup(planId, 'schedule');
          if (!created) log.warn('scheduled run skipped: the plan already has a job in progress', { plan: planId, job: job.id, status: job.status });
        } catch (err) {
          log.error('scheduled run could not be queued', { plan: planId, error: (err as Error).message });
        }
      },
      drill(planId) {
        try {
          jobs.requestDrill(planId, { trigger: 'schedule' });
        } catch (err) {
          log.error('scheduled drill could not be queued', { plan: planId, error: (err as Error).message });
        }
      },
      prune() {
        void scheduledPrune(catalog, backend, jobs, { now: clock(), graceMs: gcGraceMs, log: log.child('retention') });
      },
    },
    log.child('scheduler'),
  );
  scheduler.sync();
  const app = createApp({ catalog, jobs, hub, scheduler, encryption, backend, gcGraceMs, adminTokenHash: hashSecret(adminToken), clock, log: log.child('api') });
  const ticker = setInterval(() => jobs.tick(), 15_000);

  const tls = options.tlsCert && options.tlsKey
    ? { cert: await readFile(options.tlsCert), key: await readFile(options.tlsKey) }
    : null;
  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve(
      tls
        ? { fetch: app.fetch, port: options.port, hostname: options.host, createServer: createHttpsServer, serverOptions: tls }
        : { fetch: app.fetch, port: options.port, hostname: options.host },
      () => resolve(s),
    );
    s.once('error', reject);
  });
  server.on('upgrade', hub.handleUpgrade);
  const port = (server.address() as AddressInfo).port;
  const url = `${tls ? 'https' : 'http'}://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`;
  log.info('listening', { url, data: options.dataDir });

  return {
    url,
    port,
    async close() {
      clearInterval(ticker);
      scheduler.stop();
      hub.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      catalog.close();
    },
  };
}

/** The admin token is created on first start, printed once, and kept 0600 in DATA/admin-token. */
async function loadOrCreateAdminToken(dataDir: string, announce: (line: string) => void): Promise<string> {
  const file = join(dataDir, 'admin-token');
  try {
    const token = (await readFile(file, 'utf8')).trim();
    if (token) {
      await chmod(file, 0o600);
      return token;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = `lba_${randomBytes(32).toString('base64url')}`;
  const handle = await open(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
  try {
    await handle.writeFile(token + '\n');
    await handle.sync();
  } finally {
    await handle.close();
  }
  announce(`Admin token (shown once; also kept in ${file}, mode 0600):\n  ${token}`);
  return token;
}

/** A directory, or (loading the S3 client only then) a bucket. */
async function openBackend(spec: string): Promise<StoreBackend> {
  if (spec.startsWith('s3://')) return (await import('@lifeboat/shared/store/open-store')).openStore(spec);
  const backend = new FsBackend(resolve(spec));
  await mkdir(backend.root, { recursive: true, mode: 0o700 });
  return backend;
}

/** How the catalog's snapshots are stored, from the header of one of their chunks: null when it lists none, or that chunk cannot be read. */
async function howSnapshotsAreStored(catalog: Catalog, backend: StoreBackend): Promise<SnapshotStorage> {
  const [snapshot] = catalog.listSnapshots({ limit: 1 });
  if (!snapshot) return null;
  for (const artifact of catalog.artifactsOf(snapshot.id)) {
    const first = catalog.chunksOf(artifact.id)[0];
    const at = first && catalog.chunkLocation(first.id);
    if (!at) continue;
    try {
      const header = readChunkHeader(await backend.getRange(packKey(at.pack), at.offset, Math.min(at.length, 64)));
      return header.cipher === Cipher.None ? 'plaintext' : 'encrypted';
    } catch {
      return null;
    }
  }
  return null;
}

import { Command, InvalidArgumentError } from 'commander';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { readFileSync } from 'node:fs';
import { LIFEBOAT_VERSION, LifeboatError, createLogger, exitQuietlyOnClosedPipe, parseDuration } from '@lifeboat/shared';
import { startServer } from '../server.js';

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port number from 0 to 65535');
  return n;
}

exitQuietlyOnClosedPipe();

const program = new Command('lifeboat-server')
  .description('The Lifeboat server: holds plans, schedules jobs, keeps the store and the catalog.')
  .version(LIFEBOAT_VERSION);

program
  .command('start')
  .description('Start the server: HTTP API under /v1 and the agents\' WebSocket endpoint on one port.')
  .requiredOption('--data <dir>', 'data directory (catalog, store, admin token)')
  .option('--store <dir|s3://bucket/prefix?endpoint=URL>', 'the store: a directory (default DATA/store) or an S3-compatible bucket (credentials from AWS_* environment variables)')
  .option('--port <port>', 'port to listen on', port, 7400)
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--gc-grace <duration>', 'garbage collection spares chunks unreferenced for less than this', '24h')
  .option('--tls-cert <file>', 'PEM certificate, to serve HTTPS/WSS')
  .option('--tls-key <file>', 'PEM private key for --tls-cert')
  .addHelpText('after', '\nExample:\n  lifeboat-server start --data /var/lib/lifeboat --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem')
  .action(async (opts: { data: string; store?: string; port: number; host: string; gcGrace: string; tlsCert?: string; tlsKey?: string }) => {
    const gcGraceMs = opts.gcGrace === '0' || opts.gcGrace === '0s' ? 0 : parseDuration(opts.gcGrace);
    if (gcGraceMs === null) program.error(`--gc-grace takes a duration such as 1h or 24h, got "${opts.gcGrace}"`, { exitCode: 2 });
    if (!!opts.tlsCert !== !!opts.tlsKey) program.error('--tls-cert and --tls-key go together', { exitCode: 2 });
    const log = createLogger('server');
    const server = await startServer({ dataDir: resolve(opts.data), store: opts.store, gcGraceMs: gcGraceMs!, clock: testClock(), port: opts.port, host: opts.host, tlsCert: opts.tlsCert, tlsKey: opts.tlsKey, log });
    let closing = false;
    const stop = (signal: string) => {
      if (closing) return;
      closing = true;
      log.info(`${signal}: shutting down`);
      server.close().then(() => process.exit(0), () => process.exit(1));
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });

program
  .command('rebuild-catalog')
  .description('Rebuild the catalog (snapshots, artifacts, chunk lists, plans, and the chunk index from the packs\' index objects) from the store alone. Stop the server first.')
  .requiredOption('--data <dir>', 'the server\'s data directory; DATA/catalog.db is replaced (the old one is kept as catalog.db.bak-<time>)')
  .option('--store <dir|s3://bucket/prefix?endpoint=URL>', 'the store, as given to `start` (default DATA/store)')
  .option('--force', 'replace a catalog that already lists snapshots (agents, plans and job history in it are kept)')
  .option('--no-check-chunks', 'do not check that every chunk a manifest names is in a pack index, nor that each indexed pack exists (one listing of packs/ fewer)')
  .addHelpText(
    'after',
    [
      '',
      'The server must not be running: a catalog a server holds open is refused. Agents the catalog no longer',
      'knows become revoked placeholders: enroll those machines again.',
      '',
      'Example:',
      '  systemctl stop lifeboat-server && lifeboat-server rebuild-catalog --data /var/lib/lifeboat && systemctl start lifeboat-server',
    ].join('\n'),
  )
  .action(async (opts: { data: string; store?: string; force?: boolean; checkChunks: boolean }) => {
    const { rebuildCatalog, rebuildSummary } = await import('../catalog/rebuild.js');
    const { openStore } = await import('@lifeboat/shared/store/open-store');
    const dataDir = resolve(opts.data);
    const spec = opts.store ?? join(dataDir, 'store');
    const storeSpec = spec.startsWith('s3://') ? spec : resolve(spec);
    if (!storeSpec.startsWith('s3://') && !(await isDirectory(storeSpec))) {
      throw new LifeboatError('not_found', `there is no store directory at ${storeSpec}; give the store with --store`);
    }
    const report = await rebuildCatalog({
      dataDir,
      backend: openStore(storeSpec),
      force: opts.force === true,
      checkChunks: opts.checkChunks,
      now: Date.now(),
      progress: (line) => process.stderr.write(line + '\n'),
    });
    process.stdout.write(rebuildSummary(report).join('\n') + '\n');
    if (report.damaged.length) {
      process.stderr.write(`lifeboat-server: ${report.damaged.length} manifest(s) could not be used (listed above); the catalog was rebuilt without them\n`);
      process.exitCode = 1;
    }
  });

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`lifeboat-server: ${err.message}\n`);
  if (err instanceof LifeboatError) for (const line of err.details ?? []) process.stderr.write(`  ${line}\n`);
  process.exit(1);
});

/**
 * End-to-end tests of retention need days to pass in seconds: with LIFEBOAT_CLOCK_FILE set, the server's clock
 * (which stamps snapshots and drives retention) reads epoch milliseconds from that file. Never set in production.
 */
function testClock(): (() => number) | undefined {
  const file = process.env.LIFEBOAT_CLOCK_FILE;
  if (!file) return undefined;
  return () => {
    const value = Number(readFileSync(file, 'utf8').trim());
    return Number.isFinite(value) && value > 0 ? value : Date.now();
  };
}

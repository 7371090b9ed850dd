import { Command, InvalidArgumentError } from 'commander';
import { resolve } from 'node:path';
import { LIFEBOAT_VERSION, createLogger, exitQuietlyOnClosedPipe } from '@lifeboat/shared';
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
  .option('--tls-cert <file>', 'PEM certificate, to serve HTTPS/WSS')
  .option('--tls-key <file>', 'PEM private key for --tls-cert')
  .addHelpText('after', '\nExample:\n  lifeboat-server start --data /var/lib/lifeboat --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem')
  .action(async (opts: { data: string; store?: string; port: number; host: string; tlsCert?: string; tlsKey?: string }) => {
    if (!!opts.tlsCert !== !!opts.tlsKey) program.error('--tls-cert and --tls-key go together', { exitCode: 2 });
    const log = createLogger('server');
    const server = await startServer({ dataDir: resolve(opts.data), store: opts.store, port: opts.port, host: opts.host, tlsCert: opts.tlsCert, tlsKey: opts.tlsKey, log });
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

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`lifeboat-server: ${err.message}\n`);
  process.exit(1);
});

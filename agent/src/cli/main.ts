import { Command, InvalidArgumentError } from 'commander';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_AGENT_CONFIG_PATH, LIFEBOAT_VERSION, LifeboatError, createLogger, exitQuietlyOnClosedPipe, parseArtifactIndex, parseHostRewrite } from '@lifeboat/shared';
import { AuthRefused, startAgent } from '../agent.js';
import { loadAgentConfig } from '../config.js';
import { enroll, type EnrollOptions } from '../enroll.js';
import { enableUnit, systemdUnit, writeUnit } from '../install.js';
import type { RestoreFromStoreFlags } from './restore-from-store.js';

/** Exit code for "the configuration is wrong" (sysexits EX_CONFIG); the systemd unit does not restart on it. */
const EXIT_CONFIG = 78;

function collectLabel(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new Error(`--label takes key=value, got "${value}"`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

interface EnrollFlags {
  server: string;
  token: string;
  name: string;
  label: Record<string, string>;
  config: string;
  stateDir: string;
  force: boolean;
}

function enrollOptions(opts: EnrollFlags): EnrollOptions {
  return { server: opts.server, token: opts.token, name: opts.name, labels: opts.label, configPath: resolve(opts.config), stateDir: resolve(opts.stateDir), force: opts.force };
}

exitQuietlyOnClosedPipe();

const program = new Command('lifeboat-agent')
  .description('The Lifeboat agent: dials out to the server, runs the backups it is told to, restores on request.')
  .version(LIFEBOAT_VERSION);

/** What enroll and install both take. */
function withEnrollOptions(command: Command): Command {
  return command
    .requiredOption('--server <url>', 'the server, e.g. https://backup.example.com:7400')
    .requiredOption('--token <token>', 'one-time enrollment token from `lifeboat token create`')
    .option('--name <name>', 'this agent\'s name in plans', hostname().split('.')[0])
    .option('--label <key=value>', 'a label (repeatable), e.g. role=drill', collectLabel, {})
    .option('--config <file>', 'where to write the config', DEFAULT_AGENT_CONFIG_PATH)
    .option('--state-dir <dir>', 'where the agent keeps its state (the files cache that lets unchanged files go unread)', '/var/lib/lifeboat-agent')
    .option('--force', 'overwrite an existing config', false);
}

withEnrollOptions(
  program.command('enroll').description('Trade a one-time enrollment token for this agent\'s own secret, and write the agent config (0600).'),
)
  .addHelpText('after', '\nExample:\n  lifeboat-agent enroll --server http://10.0.0.5:7400 --token lbe_… --name web-1 --label env=prod')
  .action(async (opts: EnrollFlags) => {
    const result = await enroll(enrollOptions(opts));
    process.stdout.write(`enrolled as "${result.name}"; config written to ${result.configPath} (0600)\nstart it with: lifeboat-agent run --config ${result.configPath}\n`);
  });

withEnrollOptions(
  program.command('install').description('Enroll this machine, write a systemd unit for the agent, and start it: the one command for a new VM.'),
)
  .option('--unit-dir <dir>', 'where to write lifeboat-agent.service', '/etc/systemd/system')
  .option('--no-start', 'write the unit but do not enable or start it')
  .addHelpText('after', '\nExample:\n  lifeboat-agent install --server https://backup.example:7400 --token lbe_… --name web-1')
  .action(async (opts: EnrollFlags & { unitDir: string; start: boolean }) => {
    const result = await enroll(enrollOptions(opts));
    const agentScript = fileURLToPath(new URL('./main.js', import.meta.url));
    const unitPath = await writeUnit(resolve(opts.unitDir), systemdUnit({ nodePath: process.execPath, agentScript, configPath: result.configPath }));
    process.stdout.write(`enrolled as "${result.name}"; config ${result.configPath} (0600); unit ${unitPath}\n`);
    if (opts.start) {
      const started = enableUnit();
      process.stdout.write(started.message + '\n');
      if (!started.ok) process.exitCode = 1;
    }
  });

program
  .command('run')
  .description('Connect to the server and run jobs until stopped (SIGINT/SIGTERM). Reconnects by itself.')
  .option('--config <file>', 'the agent config written by `enroll`', DEFAULT_AGENT_CONFIG_PATH)
  .action(async (opts: { config: string }) => {
    const config = await loadAgentConfig(resolve(opts.config));
    const log = createLogger(`agent ${config.name}`);
    const agent = await startAgent(config, { log });
    const stop = (signal: string) => {
      log.info(`${signal}: stopping`);
      agent.stop();
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    try {
      await agent.done;
      process.exit(0);
    } catch (err) {
      if (err instanceof AuthRefused) {
        process.stderr.write(`lifeboat-agent: the server refused this agent: ${err.message}\n`);
        process.exit(EXIT_CONFIG);
      }
      throw err;
    }
  });

program
  .command('discover')
  .description('Look for CiviCRM, Chatwoot, Pydio Cells and Liferay in the usual places and print a ready plan (YAML) for what is found.')
  .option('--config <file>', 'the agent config, for this agent\'s name in the plans', DEFAULT_AGENT_CONFIG_PATH)
  .option('--json', 'print what was found, and the plans, as JSON')
  .addHelpText('after', '\nExample:\n  lifeboat-agent discover > plans.yaml && lifeboat plan apply plans.yaml')
  .action(async (opts: { config: string; json?: boolean }) => {
    const { agentName, discoverApplications, discoverReport, renderDiscoverYaml } = await import('../recipes/discover.js');
    const agent = await agentName(resolve(opts.config), loadAgentConfig);
    const report = discoverReport(await discoverApplications(), agent.name, agent.source);
    process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : renderDiscoverYaml(report));
  });

program
  .command('restore-from-store')
  .description('Restore a snapshot with only the store and the passphrase, no server: for when the server itself is lost.')
  .requiredOption('--store <dir|s3://bucket/prefix?endpoint=URL>', 'the store: its directory, or an S3-compatible bucket (credentials from AWS_* environment variables)')
  .option('--list', 'list the snapshots the store holds (id, plan, time, size), newest first')
  .option('--json', 'with --list: print them as JSON')
  .option('--snapshot <id>', 'the snapshot to restore (see --list)')
  .option('--to <dir>', 'restore files, SQLite databases, and dumps without a database target into this directory')
  .option('--to-postgres <url>', 'restore PostgreSQL dumps into this database, postgres://user@host:port/db (created if missing)')
  .option('--to-mysql <url>', 'restore MySQL/MariaDB dumps into this database, mysql://user@host:port/db (created if missing)')
  .option('--password-file <file>', 'for --to-postgres/--to-mysql: a file holding the database password')
  .option('--passphrase-file <file>', 'the repository passphrase, for an encrypted store')
  .option('--force', 'restore into a directory or database that is not empty')
  .option('--artifact <n>', 'restore only this artifact (index from 0; repeatable)', (v: string, prev: number[]) => [...prev, artifactIndex(v)], [] as number[])
  .option('--rewrite-host <old=new>', 'pydio-cells: replace a host in the restored configuration (repeatable)', (v: string, prev: { from: string; to: string }[]) => [...prev, hostRewrite(v)], [] as { from: string; to: string }[])
  .addHelpText(
    'after',
    [
      '',
      'Progress goes to stderr; every chunk is verified (and decrypted) as it is read. Examples:',
      '  lifeboat-agent restore-from-store --store /mnt/backup-disk/store --list',
      '  lifeboat-agent restore-from-store --store /mnt/backup-disk/store --snapshot snap_7hx2m4q9ce3kwz5tbn8a \\',
      '      --passphrase-file /root/lifeboat.pass --to /srv/restore',
      "  AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… lifeboat-agent restore-from-store --store 's3://backups/lifeboat?endpoint=https://s3.example' \\",
      "      --snapshot snap_… --passphrase-file /root/lifeboat.pass --to-postgres 'postgres://postgres@127.0.0.1:5432/app' --password-file /root/pg.pass",
    ].join('\n'),
  )
  .action(async (opts: RestoreFromStoreFlags) => {
    const { restoreFromStoreCommand } = await import('./restore-from-store.js');
    process.exitCode = await restoreFromStoreCommand(opts, { out: (line) => process.stdout.write(line + '\n'), err: (line) => process.stderr.write(line + '\n') });
  });

/** Commander wants its own error type for a bad option value; the parsing itself is shared. */
function asOptionParser<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}
const artifactIndex = asOptionParser(parseArtifactIndex);
const hostRewrite = asOptionParser(parseHostRewrite);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof LifeboatError) {
    process.stderr.write(`lifeboat-agent: ${err.message}\n${(err.details ?? []).map((d) => `  ${d}\n`).join('')}`);
    process.exit(err.code === 'bad_request' ? 2 : 1);
  }
  process.stderr.write(`lifeboat-agent: ${(err as Error).message}\n`);
  process.exit(1);
});

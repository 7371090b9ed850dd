import { Command } from 'commander';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { DEFAULT_AGENT_CONFIG_PATH, EnrollResponse, LIFEBOAT_VERSION, LifeboatError, SafeName, createLogger } from '@lifeboat/shared';
import { AuthRefused, startAgent } from '../agent.js';
import { loadAgentConfig, saveAgentConfig } from '../config.js';

/** Exit code for "the configuration is wrong" (sysexits EX_CONFIG); the systemd unit does not restart on it. */
const EXIT_CONFIG = 78;

function collectLabel(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new Error(`--label takes key=value, got "${value}"`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

const program = new Command('lifeboat-agent')
  .description('The Lifeboat agent: dials out to the server, runs the backups it is told to, restores on request.')
  .version(LIFEBOAT_VERSION);

program
  .command('enroll')
  .description('Trade a one-time enrollment token for this agent\'s own secret, and write the agent config (0600).')
  .requiredOption('--server <url>', 'the server, e.g. https://backup.example.com:7400')
  .requiredOption('--token <token>', 'one-time enrollment token from `lifeboat token create`')
  .option('--name <name>', 'this agent\'s name in plans', hostname().split('.')[0])
  .option('--label <key=value>', 'a label (repeatable), e.g. role=drill', collectLabel, {})
  .option('--config <file>', 'where to write the config', DEFAULT_AGENT_CONFIG_PATH)
  .option('--force', 'overwrite an existing config', false)
  .addHelpText('after', '\nExample:\n  lifeboat-agent enroll --server http://10.0.0.5:7400 --token lbe_… --name web-1 --label env=prod')
  .action(async (opts: { server: string; token: string; name: string; label: Record<string, string>; config: string; force: boolean }) => {
    const name = SafeName.safeParse(opts.name);
    if (!name.success) throw new LifeboatError('bad_request', `--name "${opts.name}": ${name.error.issues[0]?.message}`);
    const configPath = resolve(opts.config);
    if (!opts.force) {
      const existing = await loadAgentConfig(configPath).catch(() => null);
      if (existing) throw new LifeboatError('conflict', `${configPath} already enrolls this machine as "${existing.name}"; pass --force to replace it`);
    }
    const server = opts.server.replace(/\/+$/, '');
    let response: Response;
    try {
      response = await fetch(`${server}/v1/enroll`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: opts.token, name: opts.name, labels: opts.label, hostname: hostname() }),
      });
    } catch (err) {
      throw new LifeboatError('bad_request', `cannot reach the server at ${server}: ${(err as { cause?: Error }).cause?.message ?? (err as Error).message}`);
    }
    const body = (await response.json().catch(() => null)) as unknown;
    if (!response.ok) {
      const message = (body as { error?: { message?: string } } | null)?.error?.message ?? `HTTP ${response.status}`;
      throw new LifeboatError('unauthorized', `enrollment refused: ${message}`);
    }
    const enrolled = EnrollResponse.parse(body);
    await saveAgentConfig(configPath, { server, agentId: enrolled.agentId, name: enrolled.name, secret: enrolled.secret, labels: opts.label, stateDir: '/var/lib/lifeboat-agent' });
    process.stdout.write(`enrolled as "${enrolled.name}"; config written to ${configPath} (0600)\nstart it with: lifeboat-agent run --config ${configPath}\n`);
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

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof LifeboatError) {
    process.stderr.write(`lifeboat-agent: ${err.message}\n${(err.details ?? []).map((d) => `  ${d}\n`).join('')}`);
    process.exit(err.code === 'bad_request' ? 2 : 1);
  }
  process.stderr.write(`lifeboat-agent: ${(err as Error).message}\n`);
  process.exit(1);
});

import { createLogger, type AgentConfig, type Logger } from '@lifeboat/shared';
import { AuthRefused, Connection, type ConnectionOptions } from './connection.js';
import { Keyring } from './keyring.js';
import { JobRunner } from './runner.js';
import { detectTools } from './tools.js';

export interface RunningAgent {
  /** Settles when the agent stops: resolves after stop(), rejects with AuthRefused when the server refuses it. */
  done: Promise<void>;
  stop(): void;
}

export async function startAgent(config: AgentConfig, options: { log?: Logger; connection?: Partial<ConnectionOptions> } = {}): Promise<RunningAgent> {
  const log = options.log ?? createLogger(`agent ${config.name}`);
  const tools = await detectTools();
  log.info(`starting; server ${config.server}`, { tools: tools.map((t) => `${t.name} ${t.version}`).join(', ') });
  let runner: JobRunner;
  const keyring = new Keyring(config.passphraseFile, log);
  const connection = new Connection(
    config,
    {
      onWelcome: (w) => {
        log.info(`plans: ${w.plans.map((p) => p.id).join(', ') || 'none yet'}`);
        return keyring.update(w.encryption);
      },
      onPlans: (plans) => log.info(`plans updated: ${plans.map((p) => p.id).join(', ') || 'none'}`),
      onJob: (msg) => runner.start(msg),
      onCancel: (jobId, reason) => runner.cancel(jobId, reason),
      onDisconnected: (reason) => runner.abortAll(reason),
    },
    log,
    { tools, ...options.connection },
  );
  runner = new JobRunner(connection, keyring, log);
  return { done: connection.run(), stop: () => connection.stop() };
}

export { AuthRefused };

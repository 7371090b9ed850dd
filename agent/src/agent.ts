import path from 'node:path';
import { createLogger, type AgentConfig, type Logger } from '@lifeboat/shared';
import { AuthRefused, Connection, type ConnectionOptions } from './connection.js';
import { Keyring } from './keyring.js';
import { JobRunner } from './runner.js';
import { cleanLeftoverScratch } from './scratch/common.js';
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
  // A drill killed mid-way (the agent stopped, the machine rebooted) leaves scratch servers and directories.
  await removeLeftoverScratch(log);
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
  runner = new JobRunner(connection, keyring, log, {}, path.join(config.stateDir, 'files-cache', config.agentId));
  return { done: connection.run(), stop: () => connection.stop() };
}

export { AuthRefused };

/** Stops and removes what restore drills of an earlier run of this agent left behind; never fails the start. */
async function removeLeftoverScratch(log: Logger): Promise<void> {
  try {
    const removed = await cleanLeftoverScratch();
    for (const dir of removed) log.warn(`removed the scratch left by an interrupted restore drill: ${dir}`);
  } catch (err) {
    log.warn(`could not clean up the scratch of interrupted restore drills: ${err instanceof Error ? err.message : String(err)}`);
  }
}

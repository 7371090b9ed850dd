import { hostname } from 'node:os';
import { EnrollResponse, LifeboatError, SafeName } from '@lifeboat/shared';
import { loadAgentConfig, saveAgentConfig } from './config.js';

export interface EnrollOptions {
  server: string;
  token: string;
  name: string;
  labels: Record<string, string>;
  configPath: string;
  /** Where the agent keeps its state (the files cache, scratch); default /var/lib/lifeboat-agent. */
  stateDir?: string;
  force: boolean;
}

/** Trades a one-time enrollment token for this agent's own secret and writes the 0600 config. */
export async function enroll(opts: EnrollOptions): Promise<{ name: string; configPath: string }> {
  const name = SafeName.safeParse(opts.name);
  if (!name.success) throw new LifeboatError('bad_request', `--name "${opts.name}": ${name.error.issues[0]?.message}`);
  if (!opts.force) {
    const existing = await loadAgentConfig(opts.configPath).catch(() => null);
    if (existing) throw new LifeboatError('conflict', `${opts.configPath} already enrolls this machine as "${existing.name}"; pass --force to replace it`);
  }
  const server = opts.server.replace(/\/+$/, '');
  if (!/^https?:\/\//.test(server)) throw new LifeboatError('bad_request', `--server must be an http:// or https:// URL, got "${opts.server}"`);
  let response: Response;
  try {
    response = await fetch(`${server}/v1/enroll`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: opts.token, name: opts.name, labels: opts.labels, hostname: hostname() }),
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
  await saveAgentConfig(opts.configPath, {
    server,
    agentId: enrolled.agentId,
    name: enrolled.name,
    secret: enrolled.secret,
    labels: opts.labels,
    stateDir: opts.stateDir ?? '/var/lib/lifeboat-agent',
  });
  return { name: enrolled.name, configPath: opts.configPath };
}

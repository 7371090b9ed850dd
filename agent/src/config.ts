import { constants } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AgentConfig, LifeboatError, listIssues } from '@lifeboat/shared';

export async function loadAgentConfig(path: string): Promise<AgentConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new LifeboatError('not_found', `no agent config at ${path}; enroll first: lifeboat-agent enroll --server URL --token T --name NAME`);
    }
    throw new LifeboatError('bad_request', `cannot read the agent config ${path}: ${(err as Error).message}`);
  }
  const mode = (await stat(path)).mode & 0o077;
  if (mode !== 0) throw new LifeboatError('forbidden', `${path} holds the agent's secret and is readable by others; run: chmod 600 ${path}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new LifeboatError('bad_request', `${path} is not valid JSON`);
  }
  const result = AgentConfig.safeParse(raw);
  if (!result.success) throw new LifeboatError('bad_request', `${path} is not a valid agent config`, listIssues(result.error));
  return result.data;
}

/** Written 0600 (it holds the secret), atomically, in a 0700 directory created if needed. */
export async function saveAgentConfig(path: string, config: AgentConfig): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.tmp-${process.pid}`;
  const handle = await open(temp, constants.O_CREAT | constants.O_TRUNC | constants.O_WRONLY, 0o600);
  try {
    await handle.writeFile(JSON.stringify(config, null, 2) + '\n');
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(temp, 0o600);
  await rename(temp, path);
}

import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const UNIT_NAME = 'lifeboat-agent.service';

/**
 * V8's settings for the agent, as bin/lifeboat-agent gives them (install.test.ts holds the two equal; the
 * launcher says why these).
 */
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=2', '--heap-growing-percent=50'] as const;
/** glibc's malloc settings for the agent, as bin/lifeboat-agent sets them (held equal the same way). */
export const AGENT_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '4194304', MALLOC_TRIM_THRESHOLD_: '4194304', MALLOC_ARENA_MAX: '2' } as const;

/** The systemd unit: restart on failure, but not when the server refused the agent (exit 78, EX_CONFIG). */
export function systemdUnit(opts: { nodePath: string; agentScript: string; configPath: string }): string {
  return `[Unit]
Description=Lifeboat backup agent
Documentation=lifeboat-agent --help
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# Flat memory on long backups: freed chunk buffers go back to the system, the heap grows little (see bin/lifeboat-agent).
Environment=${Object.entries(AGENT_MALLOC_ENV).map(([name, value]) => `${name}=${value}`).join(' ')}
ExecStart=${opts.nodePath} ${AGENT_NODE_FLAGS.join(' ')} ${opts.agentScript} run --config ${opts.configPath}
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=78
# Backups read what the applications own; the agent runs as root like other backup agents.
User=root

[Install]
WantedBy=multi-user.target
`;
}

export async function writeUnit(unitDir: string, unit: string): Promise<string> {
  await mkdir(unitDir, { recursive: true });
  const path = join(unitDir, UNIT_NAME);
  await writeFile(path, unit, { mode: 0o644 });
  return path;
}

/** Enables and starts the unit; returns a message for people when systemd is not there to do it. */
export function enableUnit(): { ok: boolean; message: string } {
  const probe = spawnSync('systemctl', ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) return { ok: false, message: 'systemctl is not available here; start the agent yourself with the ExecStart line of the unit' };
  for (const args of [['daemon-reload'], ['enable', '--now', UNIT_NAME]]) {
    const result = spawnSync('systemctl', args, { encoding: 'utf8' });
    if (result.status !== 0) return { ok: false, message: `systemctl ${args.join(' ')} failed: ${(result.stderr || '').trim()}` };
  }
  return { ok: true, message: `started ${UNIT_NAME}; follow it with: journalctl -u ${UNIT_NAME} -f` };
}

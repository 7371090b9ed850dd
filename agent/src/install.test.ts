import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AGENT_MALLOC_ENV, AGENT_NODE_FLAGS, systemdUnit } from './install.js';

describe('the systemd unit', () => {
  it('runs node with the flags and the malloc settings the launcher gives it', () => {
    const launcher = readFileSync(new URL('../bin/lifeboat-agent', import.meta.url), 'utf8');
    const exec = /^exec node (.*)$/m.exec(launcher);
    expect(exec?.[1]?.split(/\s+/).filter((word) => word.startsWith('--'))).toEqual([...AGENT_NODE_FLAGS]);
    const defaults = Object.fromEntries([...launcher.matchAll(/\$\{(\w+):=([^}]*)\}/g)].map((m) => [m[1], m[2]]));
    expect(defaults).toEqual(AGENT_MALLOC_ENV);
    const unit = systemdUnit({ nodePath: '/usr/bin/node', agentScript: '/opt/lifeboat/agent/dist/cli/main.js', configPath: '/etc/lifeboat/agent.json' });
    expect(unit).toContain(`ExecStart=/usr/bin/node ${AGENT_NODE_FLAGS.join(' ')} /opt/lifeboat/agent/dist/cli/main.js run --config /etc/lifeboat/agent.json\n`);
    expect(unit).toContain('RestartPreventExitStatus=78');
    expect(unit).toContain('\nEnvironment=MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=4194304 MALLOC_ARENA_MAX=2\n');
  });
});

import { z } from 'zod';
import { Labels, SafeName } from './ids.js';

/** The agent's config file (0600): written by `lifeboat-agent enroll`, read by `run`. */
export const AgentConfig = z
  .object({
    server: z.url({ protocol: /^https?$/ }),
    agentId: z.string().min(1),
    name: SafeName,
    secret: z.string().min(32),
    labels: Labels.default({}),
    /** A PEM CA bundle to trust for a server with a private certificate. */
    caFile: z.string().optional(),
    /** A file (0600) holding the repository passphrase, for encrypted repositories. Never the passphrase itself. */
    passphraseFile: z.string().optional(),
    /** Where the agent keeps its state (caches, scratch). */
    stateDir: z.string().default('/var/lib/lifeboat-agent'),
  })
  .strict();
export type AgentConfig = z.infer<typeof AgentConfig>;

export const DEFAULT_AGENT_CONFIG_PATH = '/etc/lifeboat/agent.json';

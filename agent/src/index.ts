export { startAgent, AuthRefused, type RunningAgent } from './agent.js';
export { loadAgentConfig, saveAgentConfig } from './config.js';
export type { Source, BackupStream, JobContext, RestoreSummary, RestoreOptions } from './sources/source.js';

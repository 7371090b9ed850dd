export * from './api.js';
export * from './chunker.js';
export * from './cli-io.js';
export * from './chunk-codec.js';
export * from './config.js';
export * from './duration.js';
export * from './errors.js';
export * from './frames.js';
export * from './ids.js';
export * from './keys.js';
export * from './log.js';
export * from './manifest.js';
export * from './memory.js';
export * from './plan.js';
export * from './protocol.js';

export const LIFEBOAT_VERSION = '0.1.0';
export * from './store/backend.js';
export * from './store/fs-backend.js';

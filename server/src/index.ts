export { createApp, type AppDeps } from './app.js';
export { startServer, type RunningServer, type ServerOptions } from './server.js';
export type { StoreBackend } from './store/backend.js';
export { FsBackend } from './store/fs-backend.js';

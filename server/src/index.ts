export { createApp, type AppDeps } from './app.js';
export { startServer, type RunningServer, type ServerOptions } from './server.js';

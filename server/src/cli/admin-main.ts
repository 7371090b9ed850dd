import { main } from './admin.js';

/** The `lifeboat` entry point (bin/lifeboat.js); admin.ts itself stays importable without side effects. */
process.exitCode = await main(process.argv);

import { exitQuietlyOnClosedPipe } from '@lifeboat/shared';
import { main } from './admin.js';

exitQuietlyOnClosedPipe();

/** The `lifeboat` entry point (bin/lifeboat.js); admin.ts itself stays importable without side effects. */
process.exitCode = await main(process.argv);

import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';

/** A real S3-protocol server for tests (s3rver), with credentials S3RVER / S3RVER. */
/**
 * s3rver in its own process: it signs ListObjectsV2 continuation tokens with DES, which Node 20's OpenSSL 3
 * only offers with the legacy provider — a flag that can only be given when a process starts.
 */
export async function startS3rver(directory: string, bucket: string): Promise<{ child: ChildProcess; port: number }> {
  const entry = createRequire(import.meta.url).resolve('s3rver');
  const script = `
    const S3rver = require(${JSON.stringify(entry)});
    new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: ${JSON.stringify(directory)}, configureBuckets: [{ name: ${JSON.stringify(bucket)} }] })
      .run().then((address) => process.stdout.write(JSON.stringify(address) + '\\n'), (err) => { console.error(err.message); process.exit(1); });`;
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '--no-warnings', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  // If this test process dies without afterAll, don't leave the server running.
  const stopOnExit = () => child.kill('SIGKILL');
  process.once('exit', stopOnExit);
  child.once('exit', () => process.off('exit', stopOnExit));
  let stderr = '';
  child.stderr?.on('data', (data: Buffer) => (stderr += data.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let stdout = '';
    child.stdout?.on('data', (data: Buffer) => {
      stdout += data.toString();
      const line = stdout.split('\n')[0];
      if (stdout.includes('\n') && line) resolve((JSON.parse(line) as AddressInfo).port);
    });
    child.once('exit', (code) => reject(new Error(`s3rver exited with ${code} before listening: ${stderr.trim()}`)));
  });
  return { child, port };
}


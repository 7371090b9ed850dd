import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteBucketCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeBackendConformance } from './conformance.suite.js';
import { startS3rver } from './s3rver.suite.js';
import { normalizeS3Prefix, S3Backend, type S3BackendOptions } from './s3-backend.js';

const BUCKET = 'lifeboat';
// s3rver's one account; it checks the access key id but not SigV4 signatures.
const ACCESS_KEY = 'S3RVER';
const SECRET_KEY = 'S3RVER';

let server: ChildProcess | undefined;
let serverDir: string;
let endpoint: string;
const savedEnv = { ...process.env };
let opened = 0;

beforeAll(async () => {
  // The backend reads credentials through the SDK's default chain, as in production.
  process.env.AWS_ACCESS_KEY_ID = ACCESS_KEY;
  process.env.AWS_SECRET_ACCESS_KEY = SECRET_KEY;
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
  serverDir = await mkdtemp(join(tmpdir(), 'lifeboat-s3rver-'));
  const started = await startS3rver(serverDir, BUCKET);
  server = started.child;
  endpoint = `http://127.0.0.1:${started.port}`;
});

afterAll(async () => {
  process.env = savedEnv;
  const child = server;
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  if (serverDir) await rm(serverDir, { recursive: true, force: true });
});

function backendFor(options: Partial<S3BackendOptions> = {}): S3Backend {
  return new S3Backend({ endpoint, bucket: BUCKET, forcePathStyle: true, maxAttempts: 2, connectTimeoutMs: 2000, ...options });
}

async function emptyAndClose(backend: S3Backend): Promise<void> {
  try {
    const keys: string[] = [];
    for await (const key of backend.list('')) keys.push(key);
    for (let i = 0; i < keys.length; i += 32) await Promise.all(keys.slice(i, i + 32).map((key) => backend.delete(key)));
  } finally {
    backend.close();
  }
}

storeBackendConformance('S3Backend with a prefix', async () => {
  const backend = backendFor({ prefix: `/conformance//run-${++opened}/` });
  return { backend, cleanup: () => emptyAndClose(backend) };
});

storeBackendConformance('S3Backend at the root of its own bucket', async () => {
  const bucket = `conformance-${++opened}`;
  const backend = backendFor({ bucket });
  await backend.client.send(new CreateBucketCommand({ Bucket: bucket }));
  return {
    backend,
    cleanup: async () => {
      const admin = backendFor({ bucket });
      try {
        await emptyAndClose(backend);
        await admin.client.send(new DeleteBucketCommand({ Bucket: bucket }));
      } finally {
        admin.close();
      }
    },
  };
});

describe('S3Backend', () => {
  it('normalises its prefix', () => {
    expect(normalizeS3Prefix('')).toBe('');
    expect(normalizeS3Prefix('/')).toBe('');
    expect(normalizeS3Prefix('/a//b')).toBe('a/b/');
    expect(normalizeS3Prefix('a/b/')).toBe('a/b/');
    expect(() => normalizeS3Prefix('a/../b')).toThrow(/no "\." or "\.\." parts/);
    expect(backendFor({ prefix: 'x/y' }).prefix).toBe('x/y/');
  });

  it('keeps its objects under the prefix and lists keys without it', async () => {
    const backend = backendFor({ prefix: 'isolated/store' });
    const root = backendFor();
    try {
      await backend.put('chunks/aa/inside', Buffer.from('in'));
      await root.put('chunks/aa/outside', Buffer.from('out'));
      await root.put('isolated/storage-is-not-the-store', Buffer.from('near miss'));
      await backend.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'isolated/store/chunks/aa/inside' }));
      const listed: string[] = [];
      for await (const key of backend.list('')) listed.push(key);
      expect(listed).toEqual(['chunks/aa/inside']);
      expect(await backend.has('chunks/aa/outside')).toBe(false);
    } finally {
      await root.delete('chunks/aa/outside');
      await root.delete('isolated/storage-is-not-the-store');
      await emptyAndClose(backend);
      root.close();
    }
  });

  it('sends a Content-MD5 and a signed SHA-256 of the body, so the service can refuse a damaged upload', async () => {
    const backend = backendFor({ prefix: 'digest' });
    const seen: Record<string, string>[] = [];
    backend.client.middlewareStack.add(
      (next) => async (args) => {
        const request = args.request as { method?: string; headers?: Record<string, string> };
        if (request.method === 'PUT' && request.headers) seen.push({ ...request.headers });
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'captureHeaders' },
    );
    try {
      const bytes = Buffer.from('bytes that must arrive whole');
      await backend.put('chunks/00/digest', bytes);
      expect(seen).toHaveLength(1);
      expect(seen[0]?.['content-md5']).toBe(createHash('md5').update(bytes).digest('base64'));
      expect(seen[0]?.['x-amz-content-sha256']).toBe(createHash('sha256').update(bytes).digest('hex'));
    } finally {
      await emptyAndClose(backend);
    }
  });

  it('refuses objects over its size limit, both ways, with a clear message', async () => {
    const backend = backendFor({ prefix: 'limits' });
    const small = backendFor({ prefix: 'limits', maxObjectBytes: 1024 });
    try {
      await expect(small.put('chunks/00/big', Buffer.alloc(2048))).rejects.toMatchObject({
        code: 'bad_request',
        message: expect.stringMatching(/2048 bytes is over the S3 store's limit of 1024 bytes/),
      });
      await backend.put('chunks/00/big', Buffer.alloc(2048));
      await expect(small.get('chunks/00/big')).rejects.toMatchObject({
        code: 'store_failed',
        message: expect.stringMatching(/is 2048 bytes, over the S3 store's limit of 1024 bytes/),
      });
    } finally {
      small.close();
      await emptyAndClose(backend);
    }
  });

  it('names the bucket and endpoint when the bucket does not exist, in every method', async () => {
    const backend = backendFor({ bucket: 'no-such-bucket' });
    try {
      const message = `bucket "no-such-bucket" does not exist at ${endpoint}`;
      const expected = { code: 'store_failed', message: expect.stringContaining(message) };
      await expect(backend.has('chunks/00/x')).rejects.toMatchObject(expected);
      await expect(backend.put('chunks/00/x', Buffer.from('x'))).rejects.toMatchObject(expected);
      await expect(backend.get('chunks/00/x')).rejects.toMatchObject(expected);
      await expect(drain(backend.list('chunks/'))).rejects.toMatchObject(expected);
    } finally {
      backend.close();
    }
  });

  // s3rver refuses an unknown access key id but does not verify SigV4 signatures, so a wrong secret
  // cannot be shown failing here; real services answer SignatureDoesNotMatch, mapped the same way.
  it('asks to check the credentials when the service refuses them', async () => {
    const backend = backendFor({ credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: 'wrong' } });
    try {
      const expected = { code: 'store_failed', message: expect.stringMatching(/InvalidAccessKeyId.*check the credentials in the environment/) };
      await expect(backend.put('chunks/00/x', Buffer.from('x'))).rejects.toMatchObject(expected);
      await expect(backend.get('chunks/00/x')).rejects.toMatchObject(expected);
      // HEAD answers carry no error code: the status alone says what is wrong.
      await expect(backend.has('chunks/00/x')).rejects.toMatchObject({
        code: 'store_failed',
        message: expect.stringMatching(/HTTP 403.*check the credentials in the environment/),
      });
    } finally {
      backend.close();
    }
  });

  it('says how to provide credentials when there are none', async () => {
    const before = { ...process.env };
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_WEB_IDENTITY_TOKEN_FILE']) delete process.env[name];
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    process.env.AWS_SHARED_CREDENTIALS_FILE = join(serverDir, 'no-credentials');
    process.env.AWS_CONFIG_FILE = join(serverDir, 'no-config');
    const backend = backendFor();
    try {
      await expect(backend.put('chunks/00/x', Buffer.from('x'))).rejects.toMatchObject({
        code: 'store_failed',
        message: expect.stringMatching(/no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/),
      });
    } finally {
      backend.close();
      process.env = before;
    }
  });

  it('fails quickly, naming the endpoint, when nothing listens there', async () => {
    const port = await closedPort();
    const backend = new S3Backend({ endpoint: `http://127.0.0.1:${port}`, bucket: BUCKET, forcePathStyle: true, maxAttempts: 2 });
    const started = Date.now();
    try {
      await expect(backend.put('chunks/00/x', Buffer.from('x'))).rejects.toMatchObject({
        code: 'store_failed',
        message: expect.stringContaining(`cannot reach the S3 store at http://127.0.0.1:${port} (ECONNREFUSED)`),
      });
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      backend.close();
    }
  });

  it('gives up on an endpoint that accepts connections but never answers', async () => {
    const sockets = new Set<Socket>();
    const silent: TcpServer = createTcpServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    const port = await listen(silent);
    const backend = new S3Backend({ endpoint: `http://127.0.0.1:${port}`, bucket: BUCKET, forcePathStyle: true, maxAttempts: 1, idleTimeoutMs: 300 });
    const started = Date.now();
    try {
      await expect(backend.get('chunks/00/x')).rejects.toMatchObject({
        code: 'store_failed',
        message: expect.stringContaining(`cannot reach the S3 store at http://127.0.0.1:${port}`),
      });
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      backend.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  // s3rver cannot run out of space; a stand-in answers the way MinIO and AWS do.
  it.each([
    ['XMinioStorageFull', 507, 'Storage backend has reached its minimum free drive threshold.'],
    ['XMinioAdminBucketQuotaExceeded', 400, 'Bucket quota exceeded'],
    ['EntityTooLarge', 400, 'Your proposed upload exceeds the maximum allowed object size.'],
  ])('reports "store full" when the service answers %s', async (code, status, text) => {
    const full = createHttpServer((request, response) => {
      request.resume();
      request.on('end', () => {
        response.writeHead(status, { 'content-type': 'application/xml' });
        response.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${text}</Message><Resource>/${BUCKET}/x</Resource><RequestId>1</RequestId></Error>`);
      });
    });
    const port = await listen(full);
    const backend = new S3Backend({ endpoint: `http://127.0.0.1:${port}`, bucket: BUCKET, forcePathStyle: true, maxAttempts: 1 });
    try {
      await expect(backend.put('chunks/00/x', Buffer.from('x'))).rejects.toMatchObject({
        code: 'store_full',
        message: expect.stringMatching(new RegExp(`^store full: .*\\(${code}: ${text.replace(/[.]/g, '\\.')}\\)`)),
      });
    } finally {
      backend.close();
      full.closeAllConnections();
      await new Promise((resolve) => full.close(resolve));
    }
  });

  it('writes into a bucket another client can read, through plain S3 calls', async () => {
    const backend = backendFor({ prefix: 'interop' });
    try {
      await backend.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'interop/snapshots/s.json', Body: Buffer.from('{"v":1}') }));
      expect((await backend.get('snapshots/s.json')).toString()).toBe('{"v":1}');
    } finally {
      await emptyAndClose(backend);
    }
  });
});

async function drain(keys: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const key of keys) out.push(key);
  return out;
}

function listen(server: TcpServer | HttpServer): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

/** A port that was free a moment ago and has nothing listening on it now. */
async function closedPort(): Promise<number> {
  const probe = createTcpServer();
  const port = await listen(probe);
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { LifeboatError } from '../errors.js';
import type { StoreBackend } from './backend.js';

/** Chunks are at most 8 MiB plus a header; manifests are far smaller. Anything bigger is not ours. */
export const S3_MAX_OBJECT_BYTES = 64 * 1024 * 1024;

export interface S3BackendOptions {
  /** An S3-compatible service (MinIO, Ceph RGW, Garage, …), e.g. "http://minio:9000". Absent: AWS S3. */
  endpoint?: string;
  /** Default 'us-east-1' (what MinIO, Garage and s3rver expect unless configured otherwise). */
  region?: string;
  bucket: string;
  /** Where this store lives inside the bucket, e.g. "lifeboat/prod". Normalised to "lifeboat/prod/". */
  prefix?: string;
  /** Path-style URLs (http://host/bucket/key): needed by most self-hosted services. */
  forcePathStyle?: boolean;
  /**
   * Normally absent: the SDK's default chain reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
   * AWS_SESSION_TOKEN, or AWS_PROFILE and ~/.aws. Never put secrets in a store spec.
   */
  credentials?: S3ClientConfig['credentials'];
  /** Give up connecting after this long (default 10 s). */
  connectTimeoutMs?: number;
  /** Give up on a request whose socket stays idle this long (default 60 s). */
  idleTimeoutMs?: number;
  /** Attempts per request, the first included, with the SDK's backoff between them (default 3). */
  maxAttempts?: number;
  /** Refuse objects larger than this, both ways (default 64 MiB). */
  maxObjectBytes?: number;
}

/** Error names S3-compatible services use when they are out of space or over a quota. */
const FULL_ERRORS = new Set([
  'EntityTooLarge',
  'XMinioStorageFull',
  'XMinioAdminBucketQuotaExceeded',
  'QuotaExceeded', // Ceph RGW
  'InsufficientStorage',
  'StorageFull',
]);
const CREDENTIAL_ERRORS = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'Forbidden',
]);
const CORRUPT_UPLOAD_ERRORS = new Set(['BadDigest', 'InvalidDigest', 'XAmzContentSHA256Mismatch', 'IncompleteBody']);
const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ECONNABORTED',
]);

/**
 * The store in an S3-compatible bucket, one object per key under `prefix`.
 * An S3 PUT is atomic and durable when acknowledged, so there is no temp-and-rename here; the body carries a
 * Content-MD5 (and the signed x-amz-content-sha256) so the service refuses an upload cut or altered in transit.
 * Needs s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket.
 */
export class S3Backend implements StoreBackend {
  readonly bucket: string;
  readonly prefix: string;
  /** For messages: where the bucket is, never with credentials. */
  readonly endpointLabel: string;
  /** Exposed so tests can observe requests; the rest of Lifeboat only uses the StoreBackend methods. */
  readonly client: S3Client;
  private readonly maxObjectBytes: number;
  /** HEAD of a missing key and of a missing bucket both answer a bare 404; the bucket is checked once. */
  private bucketChecked: Promise<void> | undefined;

  constructor(options: S3BackendOptions) {
    if (!options.bucket) throw new LifeboatError('bad_request', 'the S3 store needs a bucket name');
    this.bucket = options.bucket;
    this.prefix = normalizeS3Prefix(options.prefix ?? '');
    this.endpointLabel = describeEndpoint(options.endpoint, options.region ?? 'us-east-1');
    this.maxObjectBytes = options.maxObjectBytes ?? S3_MAX_OBJECT_BYTES;
    this.client = new S3Client({
      region: options.region ?? 'us-east-1',
      ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle ?? false,
      ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
      maxAttempts: options.maxAttempts ?? 3,
      // We send Content-MD5 ourselves, which every S3-compatible service checks; the SDK's newer default
      // checksum headers are refused by some of them.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      requestHandler: {
        connectionTimeout: options.connectTimeoutMs ?? 10_000,
        socketTimeout: options.idleTimeoutMs ?? 60_000,
      },
    });
  }

  /** Releases the client's sockets; the backend is unusable afterwards. */
  close(): void {
    this.client.destroy();
  }

  async has(key: string): Promise<boolean> {
    const objectKey = this.objectKey(key);
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return true;
    } catch (err) {
      if (isNotFound(err)) {
        await this.checkBucket();
        return false;
      }
      throw this.failure(err, `checking ${key}`);
    }
  }

  async put(key: string, content: Buffer | readonly Buffer[]): Promise<void> {
    const objectKey = this.objectKey(key);
    // One request body: the SDK needs its length and MD5 up front, so parts are joined here.
    const bytes = Buffer.isBuffer(content) ? content : Buffer.concat(content);
    if (bytes.length > this.maxObjectBytes) {
      throw new LifeboatError(
        'bad_request',
        `refusing to write ${key}: ${bytes.length} bytes is over the S3 store's limit of ${this.maxObjectBytes} bytes`,
      );
    }
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: objectKey,
          Body: bytes,
          ContentLength: bytes.length,
          ContentMD5: createHash('md5').update(bytes).digest('base64'),
          ContentType: 'application/octet-stream',
        }),
      );
    } catch (err) {
      throw this.failure(err, `writing ${key}`);
    }
  }

  async get(key: string): Promise<Buffer> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      const body = response.Body;
      if (!(body instanceof Readable)) throw new LifeboatError('store_failed', `reading ${key}: ${this.endpointLabel} sent no body`);
      return await readBounded(body, response.ContentLength, this.maxObjectBytes, key);
    } catch (err) {
      if (isNotFound(err)) throw new LifeboatError('not_found', `the store has no object ${key}`);
      throw this.failure(err, `reading ${key}`);
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    const objectKey = this.objectKey(key);
    const truncated = () => new LifeboatError('integrity', `${key} ends before bytes ${offset}–${offset + length} (truncated)`);
    if (length === 0) return Buffer.alloc(0);
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey, Range: `bytes=${offset}-${offset + length - 1}` }));
      const body = response.Body;
      if (!(body instanceof Readable)) throw new LifeboatError('store_failed', `reading ${key}: ${this.endpointLabel} sent no body`);
      const bytes = await readBounded(body, response.ContentLength, length, key);
      if (bytes.length !== length) throw truncated();
      return bytes;
    } catch (err) {
      if (isNotFound(err)) throw new LifeboatError('not_found', `the store has no object ${key}`);
      if (errorName(err) === 'InvalidRange' || httpStatus(err) === 416) throw truncated();
      throw this.failure(err, `reading ${key}`);
    }
  }

  async delete(key: string): Promise<void> {
    const objectKey = this.objectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }));
    } catch (err) {
      if (errorName(err) === 'NoSuchKey') return;
      throw this.failure(err, `deleting ${key}`);
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    if (prefix.split('/').some((part) => part === '..' || part === '.') || prefix.startsWith('/')) {
      throw new LifeboatError('bad_request', `invalid store prefix "${prefix}"`);
    }
    const full = this.prefix + prefix;
    let continuationToken: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: full, ContinuationToken: continuationToken }),
        );
      } catch (err) {
        throw this.failure(err, `listing ${prefix || 'the store'}`);
      }
      for (const object of page.Contents ?? []) {
        if (object.Key !== undefined && object.Key.startsWith(full)) yield object.Key.slice(this.prefix.length);
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated && !continuationToken) {
        throw new LifeboatError('store_failed', `listing ${prefix || 'the store'}: ${this.endpointLabel} said there is more but gave no continuation token`);
      }
    } while (continuationToken);
  }

  private objectKey(key: string): string {
    assertStoreKey(key);
    return this.prefix + key;
  }

  private checkBucket(): Promise<void> {
    this.bucketChecked ??= this.client.send(new HeadBucketCommand({ Bucket: this.bucket })).then(
      () => undefined,
      (err: unknown) => {
        this.bucketChecked = undefined; // a transient failure may be retried by the next call
        if (isNotFound(err)) throw this.noBucket();
        throw this.failure(err, `checking bucket ${this.bucket}`);
      },
    );
    return this.bucketChecked;
  }

  private noBucket(): LifeboatError {
    return new LifeboatError('store_failed', `bucket "${this.bucket}" does not exist at ${this.endpointLabel}: create it, or fix the store's bucket name`);
  }

  /** Turns whatever the SDK threw into a message a person can act on. */
  private failure(err: unknown, action: string): LifeboatError {
    if (err instanceof LifeboatError) return err;
    const name = errorName(err);
    const status = httpStatus(err);
    const detail = err instanceof Error && err.message && err.message !== 'UnknownError' ? `: ${err.message}` : '';
    if (name === 'NoSuchBucket') return this.noBucket();
    if (FULL_ERRORS.has(name) || status === 507) {
      return new LifeboatError('store_full', `store full: ${this.endpointLabel} refused ${action} in bucket "${this.bucket}" (${name}${detail})`);
    }
    if (CREDENTIAL_ERRORS.has(name) || status === 401 || status === 403) {
      return new LifeboatError(
        'store_failed',
        `${this.endpointLabel} refused ${action} in bucket "${this.bucket}" (${name === 'Unknown' ? `HTTP ${status}` : name}): ` +
          'check the credentials in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or AWS_PROFILE) and their permissions on the bucket',
      );
    }
    if (name === 'CredentialsProviderError') {
      return new LifeboatError(
        'store_failed',
        `${action} failed: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment`,
      );
    }
    if (CORRUPT_UPLOAD_ERRORS.has(name)) {
      return new LifeboatError('store_failed', `${action} was refused by ${this.endpointLabel} because the bytes arrived damaged (${name}); nothing was stored, retry`);
    }
    const code = systemCode(err);
    if (name === 'TimeoutError' || name === 'RequestTimeout' || (code !== undefined && NETWORK_ERROR_CODES.has(code))) {
      return new LifeboatError('store_failed', `cannot reach the S3 store at ${this.endpointLabel} (${code ?? name}): ${action} failed; check the endpoint and the network`);
    }
    return new LifeboatError('store_failed', `${action} at ${this.endpointLabel} failed (${name}${status ? `, HTTP ${status}` : ''})${detail}`);
  }
}

/** The same rule as FsBackend's, so a store can move between backends: relative, no '.', '..' or empty parts. */
export function assertStoreKey(key: string): void {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_./-]*$/.test(key) || key.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new LifeboatError('bad_request', `invalid store key "${key}"`);
  }
}

/** "/a//b" → "a/b/", "" → "". */
export function normalizeS3Prefix(prefix: string): string {
  const parts = prefix.split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '.' || p === '..')) throw new LifeboatError('bad_request', `invalid S3 prefix "${prefix}": no "." or ".." parts`);
  return parts.length === 0 ? '' : `${parts.join('/')}/`;
}

function describeEndpoint(endpoint: string | undefined, region: string): string {
  if (endpoint === undefined) return `AWS S3 (${region})`;
  try {
    const url = new URL(endpoint);
    url.username = '';
    url.password = '';
    return url.origin === 'null' ? endpoint : url.origin + (url.pathname === '/' ? '' : url.pathname);
  } catch {
    return endpoint;
  }
}

async function readBounded(body: Readable, declared: number | undefined, max: number, key: string): Promise<Buffer> {
  if (declared !== undefined && declared > max) {
    body.destroy();
    throw new LifeboatError('store_failed', `object ${key} is ${declared} bytes, over the S3 store's limit of ${max} bytes: the store holds something Lifeboat did not write`);
  }
  const parts: Buffer[] = [];
  let total = 0;
  for await (const part of body) {
    const bytes = Buffer.isBuffer(part) ? part : Buffer.from(part as Uint8Array);
    total += bytes.length;
    if (total > (declared ?? max)) {
      body.destroy();
      throw new LifeboatError('store_failed', `reading ${key}: the S3 store sent more bytes than the object's ${declared ?? max}-byte size`);
    }
    parts.push(bytes);
  }
  if (declared !== undefined && total !== declared) {
    throw new LifeboatError('store_failed', `reading ${key}: the S3 store sent ${total} of ${declared} bytes; retry`);
  }
  return Buffer.concat(parts, total);
}

function isNotFound(err: unknown): boolean {
  const name = errorName(err);
  // HEAD answers have no body, so the SDK can only name them after the status.
  return name === 'NoSuchKey' || name === 'NotFound' || (name === 'Unknown' && httpStatus(err) === 404);
}

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : 'Unknown';
}

function httpStatus(err: unknown): number | undefined {
  const metadata = (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata;
  return metadata?.httpStatusCode;
}

function systemCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

import { isAbsolute, normalize } from 'node:path';
import { LifeboatError } from '../errors.js';
import type { StoreBackend } from './backend.js';
import { FsBackend } from './fs-backend.js';
import { normalizeS3Prefix, S3Backend, type S3BackendOptions } from './s3-backend.js';

const USAGE = 'use an absolute directory (/var/lib/lifeboat/store) or s3://bucket/prefix?endpoint=http://host:9000&region=us-east-1&pathStyle=true';
const S3_PARAMETERS = new Set(['endpoint', 'region', 'pathStyle']);

export type StoreSpec = { kind: 'fs'; root: string } | { kind: 's3'; options: S3BackendOptions };

/**
 * Where the store lives, from one string: a plain absolute path is a local directory, `s3://bucket/prefix?…`
 * a bucket. Credentials never go in the spec (it is shown and logged): S3 reads them from the environment.
 * With an `endpoint`, path-style addressing is the default (MinIO, Garage, Ceph); `pathStyle=false` turns it off.
 */
export function parseStoreSpec(spec: string): StoreSpec {
  const text = spec.trim();
  if (text === '') throw new LifeboatError('bad_request', `the store is not set: ${USAGE}`);
  if (text.startsWith('s3://')) return { kind: 's3', options: parseS3Spec(text) };
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text)) {
    throw new LifeboatError('bad_request', `unsupported store "${text.slice(0, text.indexOf(':'))}://…": ${USAGE}`);
  }
  if (!isAbsolute(text)) throw new LifeboatError('bad_request', `the store directory "${text}" is not an absolute path: ${USAGE}`);
  return { kind: 'fs', root: normalize(text).replace(/(.)\/+$/, '$1') };
}

export function openStore(spec: string): StoreBackend {
  const parsed = parseStoreSpec(spec);
  return parsed.kind === 'fs' ? new FsBackend(parsed.root) : new S3Backend(parsed.options);
}

function parseS3Spec(spec: string): S3BackendOptions {
  const rest = spec.slice('s3://'.length);
  const queryAt = rest.indexOf('?');
  const location = queryAt === -1 ? rest : rest.slice(0, queryAt);
  const query = new URLSearchParams(queryAt === -1 ? '' : rest.slice(queryAt + 1));
  const slashAt = location.indexOf('/');
  const bucket = slashAt === -1 ? location : location.slice(0, slashAt);
  const rawPrefix = slashAt === -1 ? '' : location.slice(slashAt + 1);

  if (bucket.includes('@')) {
    throw new LifeboatError('bad_request', 'credentials do not belong in the store spec (it is shown and logged): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment');
  }
  // S3's rule for bucket names, less the rarely used corner cases.
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new LifeboatError('bad_request', `"${bucket}" is not a valid bucket name (3–63 lowercase letters, digits, "." or "-"): ${USAGE}`);
  }
  let prefix: string;
  try {
    prefix = normalizeS3Prefix(decodeURIComponent(rawPrefix));
  } catch (err) {
    if (err instanceof LifeboatError) throw err;
    throw new LifeboatError('bad_request', `the prefix "${rawPrefix}" in the store spec is not valid percent-encoding`);
  }

  for (const name of query.keys()) {
    if (!S3_PARAMETERS.has(name)) throw new LifeboatError('bad_request', `unknown S3 store option "${name}" (known: endpoint, region, pathStyle)`);
  }
  for (const name of S3_PARAMETERS) {
    if (query.getAll(name).length > 1) throw new LifeboatError('bad_request', `the S3 store option "${name}" is given twice`);
  }

  const options: S3BackendOptions = { bucket, prefix };
  const endpoint = query.get('endpoint');
  if (endpoint !== null) options.endpoint = parseEndpoint(endpoint);
  const region = query.get('region');
  if (region !== null) {
    if (!/^[a-z0-9-]+$/.test(region)) throw new LifeboatError('bad_request', `"${region}" is not a valid region name`);
    options.region = region;
  }
  const pathStyle = query.get('pathStyle');
  if (pathStyle !== null && pathStyle !== 'true' && pathStyle !== 'false') {
    throw new LifeboatError('bad_request', `pathStyle must be true or false, not "${pathStyle}"`);
  }
  options.forcePathStyle = pathStyle === null ? options.endpoint !== undefined : pathStyle === 'true';
  return options;
}

function parseEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new LifeboatError('bad_request', `the S3 endpoint "${endpoint}" is not a URL (e.g. http://minio:9000)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new LifeboatError('bad_request', `the S3 endpoint must be http:// or https://, not ${url.protocol}//`);
  }
  if (url.username || url.password) {
    throw new LifeboatError('bad_request', 'credentials do not belong in the S3 endpoint (it is shown and logged): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment');
  }
  if (url.search || url.hash) throw new LifeboatError('bad_request', `the S3 endpoint "${endpoint}" must not carry a query or fragment`);
  return endpoint.replace(/\/+$/, '');
}

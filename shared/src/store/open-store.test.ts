import { describe, expect, it } from 'vitest';
import { FsBackend } from './fs-backend.js';
import { openStore, parseStoreSpec } from './open-store.js';
import { S3Backend } from './s3-backend.js';

describe('parseStoreSpec', () => {
  it('reads a plain absolute path as a local directory', () => {
    expect(parseStoreSpec('/var/lib/lifeboat/store')).toEqual({ kind: 'fs', root: '/var/lib/lifeboat/store' });
    expect(parseStoreSpec(' /var/lib//lifeboat/store/ ')).toEqual({ kind: 'fs', root: '/var/lib/lifeboat/store' });
    expect(parseStoreSpec('/')).toEqual({ kind: 'fs', root: '/' });
  });

  it('reads s3://bucket/prefix with its options', () => {
    expect(parseStoreSpec('s3://backups/lifeboat/prod?endpoint=http://minio:9000&region=eu-west-1&pathStyle=true')).toEqual({
      kind: 's3',
      options: { bucket: 'backups', prefix: 'lifeboat/prod/', endpoint: 'http://minio:9000', region: 'eu-west-1', forcePathStyle: true },
    });
  });

  it('uses AWS with virtual-hosted addressing when no endpoint is given', () => {
    expect(parseStoreSpec('s3://my.backups')).toEqual({ kind: 's3', options: { bucket: 'my.backups', prefix: '', forcePathStyle: false } });
    expect(parseStoreSpec('s3://backups/')).toEqual({ kind: 's3', options: { bucket: 'backups', prefix: '', forcePathStyle: false } });
  });

  it('defaults to path-style with a custom endpoint, unless told otherwise', () => {
    const spec = parseStoreSpec('s3://backups?endpoint=https://s3.example.net/');
    expect(spec).toEqual({ kind: 's3', options: { bucket: 'backups', prefix: '', endpoint: 'https://s3.example.net', forcePathStyle: true } });
    const virtual = parseStoreSpec('s3://backups?endpoint=https://s3.example.net&pathStyle=false');
    expect(virtual.kind === 's3' && virtual.options.forcePathStyle).toBe(false);
  });

  it('normalises the prefix and decodes percent-escapes in it', () => {
    const spec = parseStoreSpec('s3://backups//a//b%20c/');
    expect(spec.kind === 's3' && spec.options.prefix).toBe('a/b c/');
  });

  it.each([
    ['', /the store is not set/],
    ['   ', /the store is not set/],
    ['store', /"store" is not an absolute path/],
    ['./store', /not an absolute path/],
    ['~/store', /not an absolute path/],
    ['file:///var/store', /unsupported store "file:\/\/…"/],
    ['gs://bucket/x', /unsupported store "gs:\/\/…"/],
    ['s3://', /"" is not a valid bucket name/],
    ['s3:///prefix', /"" is not a valid bucket name/],
    ['s3://Backups', /"Backups" is not a valid bucket name/],
    ['s3://ab', /"ab" is not a valid bucket name/],
    ['s3://bucket_1', /not a valid bucket name/],
    ['s3://bucket/a/../b', /no "\." or "\.\." parts/],
    ['s3://bucket/%zz', /not valid percent-encoding/],
    ['s3://bucket?regoin=eu-west-1', /unknown S3 store option "regoin"/],
    ['s3://bucket?region=eu-west-1&region=us-east-1', /"region" is given twice/],
    ['s3://bucket?region=EU West', /not a valid region name/],
    ['s3://bucket?pathStyle=yes', /pathStyle must be true or false, not "yes"/],
    ['s3://bucket?endpoint=minio:9000x', /must be http:\/\/ or https:\/\//],
    ['s3://bucket?endpoint=not a url', /is not a URL/],
    ['s3://bucket?endpoint=ftp://host', /must be http:\/\/ or https:\/\//],
  ])('refuses %j with a clear message', (spec, message) => {
    expect(() => parseStoreSpec(spec)).toThrow(message);
    try {
      parseStoreSpec(spec);
    } catch (err) {
      expect(err).toMatchObject({ name: 'LifeboatError', code: 'bad_request' });
    }
  });

  it('refuses credentials in the spec without repeating them', () => {
    for (const spec of ['s3://AKIAEXAMPLE:s3cr3t@bucket/prefix', 's3://bucket?endpoint=http://AKIAEXAMPLE:s3cr3t@minio:9000']) {
      let message = '';
      try {
        parseStoreSpec(spec);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/credentials do not belong in the .*set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment/);
      expect(message).not.toContain('s3cr3t');
      expect(message).not.toContain('AKIAEXAMPLE');
    }
  });
});

describe('openStore', () => {
  it('opens a directory as an FsBackend', () => {
    const store = openStore('/srv/lifeboat/store');
    expect(store).toBeInstanceOf(FsBackend);
    expect((store as FsBackend).root).toBe('/srv/lifeboat/store');
  });

  it('opens a bucket as an S3Backend, without contacting it', () => {
    const store = openStore('s3://backups/lifeboat?endpoint=http://127.0.0.1:9&region=eu-central-1');
    expect(store).toBeInstanceOf(S3Backend);
    const s3 = store as S3Backend;
    expect(s3.bucket).toBe('backups');
    expect(s3.prefix).toBe('lifeboat/');
    expect(s3.endpointLabel).toBe('http://127.0.0.1:9');
    s3.close();
  });
});

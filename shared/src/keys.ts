import { createHmac, hkdfSync, randomBytes, scryptSync } from 'node:crypto';
import { z } from 'zod';
import type { ChunkKeys } from './chunk-codec.js';

/**
 * Repository encryption: a passphrase (known to agents and people, never to the server) goes through a slow
 * KDF (scrypt) with the repository's salt; the result yields the chunk keys and a key check. The server keeps
 * only the salt, the KDF parameters and the key check, so it can refuse a wrong passphrase at once without
 * being able to decrypt anything.
 */
export const KdfParams = z.object({
  algorithm: z.literal('scrypt'),
  /** CPU/memory cost; 2^15 with r=8 takes ~32 MiB and a good fraction of a second, once per agent start. */
  N: z.number().int().min(1024).max(1 << 20),
  r: z.number().int().min(1).max(32),
  p: z.number().int().min(1).max(16),
  salt: z.string().regex(/^[0-9a-f]{32,128}$/),
});
export type KdfParams = z.infer<typeof KdfParams>;

export const EncryptionSettings = z.object({ kdf: KdfParams, keyCheck: z.string().regex(/^[0-9a-f]{64}$/) });
export type EncryptionSettings = z.infer<typeof EncryptionSettings>;
/** Where a repository stands: encrypted, left unencrypted by its owner, or not yet chosen (no backup runs then). */
export const EncryptionState = z.enum(['encrypted', 'unencrypted', 'undecided']);
export type EncryptionState = z.infer<typeof EncryptionState>;

export interface RepositoryKeys extends ChunkKeys {
  keyCheck: string;
}

export function newKdfParams(): KdfParams {
  return { algorithm: 'scrypt', N: 1 << 15, r: 8, p: 1, salt: randomBytes(32).toString('hex') };
}

export function deriveRepositoryKeys(passphrase: string, kdf: KdfParams): RepositoryKeys {
  const master = scryptSync(passphrase.normalize('NFC'), Buffer.from(kdf.salt, 'hex'), 64, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: 256 * kdf.N * kdf.r + 1024 * 1024 });
  const sub = (info: string) => Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `lifeboat ${info} v1`, 32));
  const check = sub('key check');
  return {
    encryption: sub('chunk encryption'),
    id: sub('chunk id'),
    keyCheck: createHmac('sha256', check).update('lifeboat repository key check').digest('hex'),
  };
}

/** Settings for a new encrypted repository, from a passphrase: what the server keeps. */
export function newEncryptionSettings(passphrase: string): EncryptionSettings {
  if (passphrase.length < 12) throw new Error('the passphrase must be at least 12 characters');
  const kdf = newKdfParams();
  return { kdf, keyCheck: deriveRepositoryKeys(passphrase, kdf).keyCheck };
}

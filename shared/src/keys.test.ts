import { describe, expect, it } from 'vitest';
import { deriveRepositoryKeys, newEncryptionSettings } from './keys.js';

describe('repository keys', () => {
  it('derives the same keys from the same passphrase, and a different key check from another', () => {
    const settings = newEncryptionSettings('correct horse battery staple');
    const a = deriveRepositoryKeys('correct horse battery staple', settings.kdf);
    expect(a.keyCheck).toBe(settings.keyCheck);
    expect(deriveRepositoryKeys('correct horse battery staple', settings.kdf).encryption.equals(a.encryption)).toBe(true);
    expect(deriveRepositoryKeys('wrong horse battery staple', settings.kdf).keyCheck).not.toBe(settings.keyCheck);
    expect(a.encryption.equals(a.id)).toBe(false);
  });

  it('refuses a short passphrase', () => {
    expect(() => newEncryptionSettings('short')).toThrow(/at least 12/);
  });
});

import { EncryptionSettings, LifeboatError } from '@lifeboat/shared';
import type { StoreBackend } from '@lifeboat/shared';

const KEY = 'config/encryption.json';

/**
 * The repository's encryption settings (KDF parameters and key check — never a key), kept in the store
 * itself so the store stays self-describing. Set once; changing them would orphan every encrypted chunk.
 */
export class RepositoryEncryption {
  private settings: EncryptionSettings | null = null;

  constructor(private readonly backend: StoreBackend) {}

  async load(): Promise<void> {
    if (!(await this.backend.has(KEY))) return;
    const parsed = EncryptionSettings.safeParse(JSON.parse((await this.backend.get(KEY)).toString('utf8')));
    if (!parsed.success) throw new LifeboatError('integrity', `the store's ${KEY} is damaged; restore it from a copy before starting`);
    this.settings = parsed.data;
  }

  get current(): EncryptionSettings | null {
    return this.settings;
  }

  async init(settings: EncryptionSettings): Promise<void> {
    if (this.settings) throw new LifeboatError('conflict', 'this repository is already encrypted; its passphrase cannot be replaced');
    await this.backend.put(KEY, Buffer.from(JSON.stringify(settings, null, 2)));
    this.settings = settings;
  }
}

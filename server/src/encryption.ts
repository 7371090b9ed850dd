import { EncryptionSettings, ENCRYPTION_CONFIG_KEY as KEY, LifeboatError, UNENCRYPTED_CONFIG_KEY as UNENCRYPTED_KEY } from '@lifeboat/shared';
import type { EncryptionState, StoreBackend } from '@lifeboat/shared';

/** What a backup is refused with until the repository's owner has chosen. */
export const ENCRYPTION_UNDECIDED =
  'backups are refused until this repository\'s encryption is chosen: `lifeboat encryption init --passphrase-file FILE` ' +
  '(recommended: the server and the store never see your data), or `lifeboat encryption off` to store them in plaintext (a demo, a disk you trust)';

/**
 * The repository's encryption settings (KDF parameters and key check — never a key), kept in the store
 * itself so the store stays self-describing. Set once; changing them would orphan every encrypted chunk.
 *
 * Encrypted unless the owner says otherwise: a new repository takes no backup until it is either given a
 * passphrase or explicitly left unencrypted (as `borg init` makes one choose). A store that already held
 * plaintext snapshots before this rule counts as left unencrypted.
 */
export class RepositoryEncryption {
  private settings: EncryptionSettings | null = null;
  private declined = false;

  constructor(private readonly backend: StoreBackend) {}

  /** `holdsSnapshots`: the catalog already lists snapshots (taken before encryption had to be chosen). */
  async load(holdsSnapshots = false): Promise<void> {
    if (await this.backend.has(KEY)) {
      const parsed = EncryptionSettings.safeParse(JSON.parse((await this.backend.get(KEY)).toString('utf8')));
      if (!parsed.success) throw new LifeboatError('integrity', `the store's ${KEY} is damaged; restore it from a copy before starting`);
      this.settings = parsed.data;
      return;
    }
    if (await this.backend.has(UNENCRYPTED_KEY)) this.declined = true;
    else if (holdsSnapshots) await this.decline('kept unencrypted: the store held plaintext snapshots when encryption became a choice');
  }

  get current(): EncryptionSettings | null {
    return this.settings;
  }

  get state(): EncryptionState {
    return this.settings ? 'encrypted' : this.declined ? 'unencrypted' : 'undecided';
  }

  /** Throws, saying what to do, while no choice has been made: backups wait for one. */
  requireChoice(): void {
    if (this.state === 'undecided') throw new LifeboatError('conflict', ENCRYPTION_UNDECIDED);
  }

  async init(settings: EncryptionSettings): Promise<void> {
    if (this.settings) throw new LifeboatError('conflict', 'this repository is already encrypted; its passphrase cannot be replaced');
    await this.backend.put(KEY, Buffer.from(JSON.stringify(settings, null, 2)));
    this.settings = settings;
  }

  /** Backups from now on are stored in plaintext (until `init`). */
  async decline(reason = 'lifeboat encryption off'): Promise<void> {
    if (this.settings) throw new LifeboatError('conflict', 'this repository is encrypted; encryption cannot be turned off (its snapshots need the passphrase)');
    if (this.declined) return;
    await this.backend.put(UNENCRYPTED_KEY, Buffer.from(JSON.stringify({ unencrypted: true, reason, at: new Date().toISOString() }, null, 2)));
    this.declined = true;
  }
}

import { EncryptionSettings, ENCRYPTION_CONFIG_KEY as KEY, LifeboatError, UNENCRYPTED_CONFIG_KEY as UNENCRYPTED_KEY } from '@lifeboat/shared';
import type { EncryptionState, StoreBackend } from '@lifeboat/shared';

/** How a repository's existing snapshots are stored, as one of their chunks says; null when there is none to ask. */
export type SnapshotStorage = 'plaintext' | 'encrypted' | null;

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
 * plaintext snapshots before this rule counts as left unencrypted; one whose snapshots are encrypted but whose
 * settings are gone is refused (its next backups would otherwise go out in plaintext).
 */
export class RepositoryEncryption {
  private settings: EncryptionSettings | null = null;
  private declined = false;

  constructor(private readonly backend: StoreBackend) {}

  /**
   * `howSnapshotsAre` tells how a chunk of a snapshot the catalog lists is stored (`'plaintext'` or `'encrypted'`),
   * or null when it lists none (or that chunk could not be read); asked only when the store has no settings.
   */
  async load(howSnapshotsAre: () => Promise<SnapshotStorage> = async () => null): Promise<void> {
    if (await this.backend.has(KEY)) {
      const parsed = EncryptionSettings.safeParse(JSON.parse((await this.backend.get(KEY)).toString('utf8')));
      if (!parsed.success) throw new LifeboatError('integrity', `the store's ${KEY} is damaged; restore it from a copy before starting`);
      this.settings = parsed.data;
      return;
    }
    const snapshotsAre = await howSnapshotsAre();
    if (snapshotsAre === 'encrypted') {
      throw new LifeboatError('integrity', `the store's snapshots are encrypted, but its ${KEY} (the KDF salt and key check) is missing: put it back from a copy of the store before starting, or every later backup would be unencrypted`);
    }
    if (await this.backend.has(UNENCRYPTED_KEY)) {
      this.declined = true;
    } else if (snapshotsAre === 'plaintext') {
      // Kept as it was before encryption became a choice; recorded in the store when it can be (a read-only
      // store keeps the decision in memory, made again at every start).
      this.declined = true;
      await this.record('kept unencrypted: the store held plaintext snapshots when encryption became a choice').catch(() => undefined);
    }
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
  async decline(): Promise<void> {
    if (this.settings) throw new LifeboatError('conflict', 'this repository is encrypted; encryption cannot be turned off (its snapshots need the passphrase)');
    if (this.declined) return;
    await this.record('lifeboat encryption off');
    this.declined = true;
  }

  private async record(reason: string): Promise<void> {
    await this.backend.put(UNENCRYPTED_KEY, Buffer.from(JSON.stringify({ unencrypted: true, reason, at: new Date().toISOString() }, null, 2)));
  }
}

import { readFile, stat } from 'node:fs/promises';
import { deriveRepositoryKeys, LifeboatError, type EncryptionSettings, type Logger, type RepositoryKeys } from '@lifeboat/shared';

/**
 * The repository keys this agent uses, derived once per server announcement from the passphrase file in its
 * config. A missing or wrong passphrase is an error every job reports before any data moves.
 */
export class Keyring {
  private settings: EncryptionSettings | null = null;
  private keys: RepositoryKeys | null = null;
  private problem: LifeboatError | null = null;

  constructor(
    private readonly passphraseFile: string | undefined,
    private readonly log: Logger,
  ) {}

  /** Called with the server's welcome: derive (slow KDF) only when the settings changed. */
  async update(settings: EncryptionSettings | null): Promise<void> {
    if (JSON.stringify(settings) === JSON.stringify(this.settings)) return;
    this.settings = settings;
    this.keys = null;
    this.problem = null;
    if (!settings) return;
    if (!this.passphraseFile) {
      this.problem = new LifeboatError('forbidden', 'the repository is encrypted and this agent has no passphrase: set passphraseFile in its config');
      this.log.error(this.problem.message);
      return;
    }
    try {
      const info = await stat(this.passphraseFile);
      if (info.mode & 0o077) this.log.warn(`${this.passphraseFile} is readable by other users; chmod 600 it`);
      const passphrase = (await readFile(this.passphraseFile, 'utf8')).replace(/\r?\n$/, '');
      const keys = deriveRepositoryKeys(passphrase, settings.kdf);
      if (keys.keyCheck !== settings.keyCheck) {
        this.problem = new LifeboatError('forbidden', `the passphrase in ${this.passphraseFile} does not match this repository's (key check differs); nothing will be sent`);
        this.log.error(this.problem.message);
        return;
      }
      this.keys = keys;
      this.log.info('repository passphrase verified; backups are encrypted');
    } catch (err) {
      this.problem = new LifeboatError('forbidden', `cannot read the passphrase file ${this.passphraseFile}: ${(err as Error).message}`);
      this.log.error(this.problem.message);
    }
  }

  /** The keys for a job: null when the repository is not encrypted; throws when it is and they are unusable. */
  forJob(): RepositoryKeys | null {
    if (this.problem) throw this.problem;
    return this.keys;
  }
}

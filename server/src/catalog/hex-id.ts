import { LifeboatError } from '@lifeboat/shared';

const HEX_ID = /^(?:[0-9a-f]{2})+$/;

/**
 * The bytes of a chunk or pack id as the catalog keeps them (schema.ts hexId). Only lowercase hex of whole bytes:
 * anything else would not read back as the same string (Buffer.from drops what is not hex without a word).
 */
export function hexIdBytes(hex: string): Buffer {
  if (!HEX_ID.test(hex)) throw new LifeboatError('bad_request', `not a chunk or pack id (lowercase hex): ${JSON.stringify(hex.slice(0, 80))}`);
  return Buffer.from(hex, 'hex');
}

/** A stored id as the code sees it. A string would be a row written before migration 0006 (by an older server run on a newer catalog): read as it is. */
export function hexIdOf(stored: Buffer | string): string {
  return typeof stored === 'string' ? stored : stored.toString('hex');
}

import path from 'node:path';

/**
 * A ustar header block for the common entry, written directly: the same bytes node-tar's Header.encode writes
 * (ustar.test.ts compares them), without its per-entry object, path splitting and string padding, which were
 * a fifth of the agent's main thread in a tree's stretches of small files (bench/RESULTS.md). Anything
 * uncommon (a name of 100 bytes or more, non-ASCII text, a number past the octal fields, a fractional mtime)
 * is left to node-tar and its pax records: `encodeUstar` then writes nothing and returns false.
 */

/** The largest values the octal fields hold (with their NUL): 7 and 11 digits. */
const MAX_OCTAL_8 = 0o7777777;
const MAX_OCTAL_12 = 0o77777777777;
const BLOCK = 512;

/** node-tar's type names (those the archive writer uses, and the pax header's) and their typeflags. */
const TYPEFLAG = { File: 0x30, Link: 0x31, SymbolicLink: 0x32, Directory: 0x35, ExtendedHeader: 0x78 } as const;

export interface UstarFields {
  path: string;
  type: keyof typeof TYPEFLAG;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  linkpath?: string | undefined;
  uname?: string | undefined;
  gname?: string | undefined;
}

/**
 * Writes the header into `block` (512 bytes, zero-filled) and returns true; returns false, with `block`
 * untouched, when the entry needs what only node-tar's encoder and a pax header give.
 */
export function encodeUstar(block: Buffer, f: UstarFields): boolean {
  return Number.isInteger(f.mtimeMs / 1000) && writeUstar(block, f);
}

/**
 * The header blocks of an entry that plain ustar holds but for a fractional mtime (most files: file systems keep
 * sub-second times): node-tar's pax header (its own header block and the records path, gid, gname, linkpath, mtime,
 * size, uid, uname, as node-tar writes them) and the ustar block, whose mtime field holds the whole seconds. Null
 * when the entry needs more, or holds a newline in a name (the archive writer decides about those).
 */
export function encodeWithPaxMtime(f: UstarFields): Buffer | null {
  if (f.path.includes('\n') || (f.linkpath?.includes('\n') ?? false)) return null;
  const body =
    paxRecord('path', f.path) +
    paxRecord('gid', f.gid) +
    paxRecord('gname', f.gname) +
    paxRecord('linkpath', f.linkpath) +
    paxRecord('mtime', f.mtimeMs / 1000) +
    paxRecord('size', f.size) +
    paxRecord('uid', f.uid) +
    paxRecord('uname', f.uname);
  const out = Buffer.alloc(BLOCK * (2 + Math.ceil(body.length / BLOCK)));
  // The entry's own block last; from here on every field is ASCII (writeUstar checked): a character is a byte.
  if (!writeUstar(out.subarray(out.length - BLOCK), f)) return null;
  const paxHeader: UstarFields = {
    path: `PaxHeader/${path.posix.basename(f.path)}`.slice(0, 99),
    type: 'ExtendedHeader',
    mode: 0o644,
    uid: f.uid,
    gid: f.gid,
    size: body.length,
    mtimeMs: f.mtimeMs,
    uname: f.uname ?? '',
    gname: f.gname ?? '',
  };
  if (!writeUstar(out, paxHeader)) return null;
  out.write(body, BLOCK, 'latin1');
  return out;
}

/** node-tar's pax record: its length in decimal (counting itself), then " key=value\n"; nothing for an undefined value. */
function paxRecord(key: string, value: string | number | undefined): string {
  if (value === undefined) return '';
  const record = ` ${key}=${value}\n`;
  // As node-tar counts the digits (the same float arithmetic, so the same answer at every power of ten).
  let digits = Math.floor(Math.log(record.length) / Math.log(10)) + 1;
  if (record.length + digits >= Math.pow(10, digits)) digits += 1;
  return `${digits + record.length}${record}`;
}

/** The block, with the mtime's whole seconds (node-tar's floor); false when a field does not fit plain ustar. */
function writeUstar(block: Buffer, f: UstarFields): boolean {
  const seconds = Math.floor(f.mtimeMs / 1000);
  if (!fitsOctal(seconds, MAX_OCTAL_12) || !fitsOctal(f.size, MAX_OCTAL_12)) return false;
  if (!fitsOctal(f.mode, MAX_OCTAL_8) || !fitsOctal(f.uid, MAX_OCTAL_8) || !fitsOctal(f.gid, MAX_OCTAL_8)) return false;
  // node-tar keeps a path under 100 bytes whole in the name field (longer ones it splits into a prefix).
  if (!isAscii(f.path, 99) || (f.linkpath !== undefined && !isAscii(f.linkpath, 100))) return false;
  if ((f.uname !== undefined && !isAscii(f.uname, 32)) || (f.gname !== undefined && !isAscii(f.gname, 32))) return false;
  block.write(f.path, 0, 'latin1');
  writeOctal(block, 100, 8, f.mode);
  writeOctal(block, 108, 8, f.uid);
  writeOctal(block, 116, 8, f.gid);
  writeOctal(block, 124, 12, f.size);
  writeOctal(block, 136, 12, seconds);
  block[156] = TYPEFLAG[f.type];
  if (f.linkpath !== undefined) block.write(f.linkpath, 157, 'latin1');
  block.write('ustar\u000000', 257, 'latin1');
  if (f.uname !== undefined) block.write(f.uname, 265, 'latin1');
  if (f.gname !== undefined) block.write(f.gname, 297, 'latin1');
  // Device numbers: 0, as node-tar writes them for every entry.
  writeOctal(block, 329, 8, 0);
  writeOctal(block, 337, 8, 0);
  // The checksum counts its own field as eight spaces.
  let sum = 8 * 0x20;
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < 512; i++) sum += block[i]!;
  writeOctal(block, 148, 8, sum);
  return true;
}

function fitsOctal(n: number, max: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= max;
}

/** Printable ASCII without NUL, at most `max` characters: one byte each, as written. */
function isAscii(s: string, max: number): boolean {
  if (s.length > max) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c > 0x7f) return false;
  }
  return true;
}

/**
 * node-tar's octal field: all `size - 1` digits and a NUL when the number needs them, else zero-padded digits, a
 * space and a NUL (so "000644 \0" for a mode).
 */
function writeOctal(block: Buffer, at: number, size: number, n: number): void {
  const digits = n.toString(8);
  const text = digits.length === size - 1 ? digits : '0'.repeat(Math.max(0, size - digits.length - 2)) + digits + ' ';
  block.write(text, at, 'latin1');
  block[at + size - 1] = 0;
}

/**
 * FNV-1a of a string's UTF-16 code units, as an unsigned 32-bit number: a cheap, well-spread hash of a path.
 * The archive writer cuts groups of small files with it, so it must never change (it decides chunk ids).
 */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

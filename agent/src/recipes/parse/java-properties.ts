/**
 * A `.properties` file as java.util.Properties.load reads it (Liferay's portal-ext.properties):
 * '#' or '!' comment lines; a line ending in an odd number of backslashes continues on the next (whose leading
 * white space is dropped); the key ends at the first unescaped '=', ':' or white space; escapes \t \n \r \f
 * and \uXXXX; any other escaped character is itself. The last definition of a key wins, as in Java.
 */

export interface PropertyEntry {
  value: string;
  /** The line where the entry starts. */
  line: number;
}

export class PropertiesSyntaxError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(message);
  }
}

export function parseJavaProperties(text: string): Map<string, PropertyEntry> {
  const out = new Map<string, PropertyEntry>();
  for (const entry of parseJavaPropertiesList(text)) out.set(entry.key, { value: entry.value, line: entry.line });
  return out;
}

/** Every entry in file order, repeated keys included (Liferay's include-and-override is repeated). */
export function parseJavaPropertiesList(text: string): (PropertyEntry & { key: string })[] {
  const out: (PropertyEntry & { key: string })[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r\n|\r|\n/);
  for (let i = 0; i < lines.length; i++) {
    const startLine = i + 1;
    let logical = lines[i]!.replace(/^[ \t\f]+/, '');
    if (logical === '' || logical.startsWith('#') || logical.startsWith('!')) continue;
    while (endsWithContinuation(logical) && i + 1 < lines.length) {
      logical = logical.slice(0, -1) + lines[++i]!.replace(/^[ \t\f]+/, '');
    }
    if (endsWithContinuation(logical)) logical = logical.slice(0, -1);
    // The key: up to the first unescaped separator.
    let k = 0;
    while (k < logical.length) {
      const ch = logical[k]!;
      if (ch === '\\') {
        k += 2;
        continue;
      }
      if (ch === '=' || ch === ':' || ch === ' ' || ch === '\t' || ch === '\f') break;
      k++;
    }
    const rawKey = logical.slice(0, k);
    let v = k;
    while (v < logical.length && /[ \t\f]/.test(logical[v]!)) v++;
    if (logical[v] === '=' || logical[v] === ':') v++;
    while (v < logical.length && /[ \t\f]/.test(logical[v]!)) v++;
    out.push({ key: unescape(rawKey, startLine), value: unescape(logical.slice(v), startLine), line: startLine });
  }
  return out;
}

function endsWithContinuation(s: string): boolean {
  let count = 0;
  for (let k = s.length - 1; k >= 0 && s[k] === '\\'; k--) count++;
  return count % 2 === 1;
}

function unescape(s: string, line: number): string {
  let out = '';
  for (let k = 0; k < s.length; k++) {
    const ch = s[k]!;
    if (ch !== '\\') {
      out += ch;
      continue;
    }
    const next = s[++k];
    if (next === undefined) break;
    if (next === 'u') {
      const hex = s.slice(k + 1, k + 5);
      if (!/^[0-9A-Fa-f]{4}$/.test(hex)) throw new PropertiesSyntaxError(line, `malformed \\uXXXX escape "\\u${hex}"`);
      out += String.fromCharCode(parseInt(hex, 16));
      k += 4;
      continue;
    }
    out += next === 't' ? '\t' : next === 'n' ? '\n' : next === 'r' ? '\r' : next === 'f' ? '\f' : next;
  }
  return out;
}

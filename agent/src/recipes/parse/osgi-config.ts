import { parseJavaProperties } from './java-properties.js';

/**
 * OSGi configuration files in Liferay's osgi/configs:
 * - `.config` (Apache Felix typed format): `key="value"`, `key=B"true"`, `key=I"9200"`,
 *   `key=["http://es1:9200","http://es2:9200"]` (an array may continue over lines ending in "\");
 * - `.cfg`: plain properties, arrays written as "a,b".
 */

export interface OsgiEntry {
  /** A scalar as its text ("true", "9200"), an array as its items. */
  value: string | string[];
  line: number;
}

export class OsgiConfigSyntaxError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(message);
  }
}

export function parseOsgiConfig(text: string, fileName: string): Map<string, OsgiEntry> {
  if (fileName.endsWith('.cfg')) {
    const out = new Map<string, OsgiEntry>();
    for (const [key, entry] of parseJavaProperties(text)) {
      out.set(key, { value: entry.value.includes(',') ? entry.value.split(',').map((s) => s.trim()).filter(Boolean) : entry.value, line: entry.line });
    }
    return out;
  }
  return parseFelixConfig(text);
}

function parseFelixConfig(text: string): Map<string, OsgiEntry> {
  const out = new Map<string, OsgiEntry>();
  const src = text.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
  let i = 0;
  let line = 1;
  const n = src.length;
  const skipBlanks = (stopAtNewline: boolean) => {
    while (i < n) {
      const ch = src[i]!;
      if (ch === '\\' && src[i + 1] === '\n') {
        i += 2;
        line++;
        continue;
      }
      if (ch === '\n') {
        if (stopAtNewline) return;
        line++;
        i++;
        continue;
      }
      if (ch === ' ' || ch === '\t') {
        i++;
        continue;
      }
      return;
    }
  };
  const readQuoted = (startLine: number): string => {
    // At the opening quote.
    i++;
    let value = '';
    for (;;) {
      if (i >= n) throw new OsgiConfigSyntaxError(startLine, 'a quoted value is never closed');
      const ch = src[i]!;
      if (ch === '"') {
        i++;
        return value;
      }
      if (ch === '\n') throw new OsgiConfigSyntaxError(line, 'a quoted value is never closed on its line');
      if (ch === '\\') {
        const next = src[i + 1];
        if (next === 'u' && /^[0-9A-Fa-f]{4}$/.test(src.slice(i + 2, i + 6))) {
          value += String.fromCharCode(parseInt(src.slice(i + 2, i + 6), 16));
          i += 6;
          continue;
        }
        const map: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (next === '\n') {
          line++;
          i += 2;
          continue;
        }
        value += next !== undefined ? (map[next] ?? next) : '';
        i += 2;
        continue;
      }
      value += ch;
      i++;
    }
  };
  while (i < n) {
    skipBlanks(false);
    if (i >= n) break;
    if (src[i] === '#' || src[i] === '!') {
      while (i < n && src[i] !== '\n') i++;
      continue;
    }
    const startLine = line;
    let key = '';
    while (i < n && src[i] !== '=' && src[i] !== '\n' && src[i] !== ' ' && src[i] !== '\t') key += src[i++];
    skipBlanks(true);
    if (src[i] !== '=' || !key) throw new OsgiConfigSyntaxError(startLine, `expected key=value, found "${(key + (src.slice(i, src.indexOf('\n', i) < 0 ? n : src.indexOf('\n', i)))).trim().slice(0, 40)}"`);
    i++;
    skipBlanks(true);
    // An optional type code: T I L F D X S C B (upper or lower case).
    if (/[TILFDXSCBtilfdxscb]/.test(src[i] ?? '') && /["[(]/.test(src[i + 1] ?? '')) i++;
    let value: string | string[];
    const open = src[i];
    if (open === '"') {
      value = readQuoted(startLine);
    } else if (open === '[' || open === '(') {
      const close = open === '[' ? ']' : ')';
      i++;
      const items: string[] = [];
      for (;;) {
        skipBlanks(false);
        if (i >= n) throw new OsgiConfigSyntaxError(startLine, `the list of ${key} is never closed with "${close}"`);
        if (src[i] === close) {
          i++;
          break;
        }
        if (src[i] === ',') {
          i++;
          continue;
        }
        if (src[i] === '"') {
          items.push(readQuoted(startLine));
          continue;
        }
        // Unquoted item (numbers in typed arrays).
        let item = '';
        while (i < n && !/[,\s\]\)]/.test(src[i]!)) item += src[i++];
        if (!item) throw new OsgiConfigSyntaxError(line, `unexpected "${src[i]}" in the list of ${key}`);
        items.push(item);
      }
      value = items;
    } else {
      // Not the typed format: take the rest of the line as written (lenient for hand-edited files).
      let raw = '';
      while (i < n && src[i] !== '\n') raw += src[i++];
      value = raw.trim();
    }
    skipBlanks(true);
    if (i < n && src[i] !== '\n' && src[i] !== '#') {
      throw new OsgiConfigSyntaxError(line, `unexpected "${src.slice(i, src.indexOf('\n', i) < 0 ? n : src.indexOf('\n', i)).slice(0, 20)}" after the value of ${key}`);
    }
    out.set(key, { value, line: startLine });
  }
  return out;
}

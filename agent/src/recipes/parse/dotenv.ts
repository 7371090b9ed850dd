/**
 * A `.env` file as Ruby's dotenv (what Chatwoot loads) reads it:
 * `KEY=value`, `export KEY=value`, `KEY: value`; '#' starts a comment outside quotes; 'single quoted' values are
 * literal; "double quoted" values take \n, \r and backslash escapes; unquoted and double-quoted values expand
 * ${VAR} and $VAR from keys defined earlier in the file (unknown ones become empty, as in dotenv). Quoted values
 * may span lines. `$(command)` is not run: it is kept as written.
 */

export interface EnvEntry {
  value: string;
  line: number;
}

export class DotenvSyntaxError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(message);
  }
}

export function parseDotenv(text: string): Map<string, EnvEntry> {
  const entries = new Map<string, EnvEntry>();
  const src = text.replace(/\r\n?/g, '\n');
  let i = 0;
  let line = 1;
  while (i < src.length) {
    const lineEnd = src.indexOf('\n', i) < 0 ? src.length : src.indexOf('\n', i);
    const current = src.slice(i, lineEnd);
    const trimmed = current.trim();
    if (trimmed === '' || trimmed.startsWith('#')) {
      i = lineEnd + 1;
      line++;
      continue;
    }
    const head = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)(?:\s*=[ \t]*|:[ \t]+)/.exec(current);
    if (!head) {
      if (/^\s*export\s+[A-Za-z_][A-Za-z0-9_.]*\s*$/.test(current)) {
        // "export KEY" alone re-exports an earlier key: nothing to read.
        i = lineEnd + 1;
        line++;
        continue;
      }
      throw new DotenvSyntaxError(line, `expected KEY=value, found "${trimmed.slice(0, 40)}"`);
    }
    const key = head[1]!;
    const startLine = line;
    let k = i + head[0].length;
    const quote = src[k];
    let value: string;
    if (quote === '"' || quote === "'" || quote === '`') {
      // Quoted: up to the matching unescaped quote, possibly over several lines.
      let j = k + 1;
      let raw = '';
      for (;;) {
        if (j >= src.length) throw new DotenvSyntaxError(startLine, `the value of ${key} opens a ${quote} quote that is never closed`);
        const ch = src[j]!;
        if (ch === '\\' && src[j + 1] === quote) {
          raw += ch + quote;
          j += 2;
          continue;
        }
        if (ch === quote) break;
        if (ch === '\n') line++;
        raw += ch;
        j++;
      }
      k = j + 1;
      // After the closing quote: only spaces and a comment.
      const after = src.slice(k, src.indexOf('\n', k) < 0 ? src.length : src.indexOf('\n', k));
      if (after.trim() !== '' && !after.trim().startsWith('#')) {
        throw new DotenvSyntaxError(line, `unexpected "${after.trim().slice(0, 20)}" after the quoted value of ${key}`);
      }
      k += after.length;
      if (quote === "'") value = raw.replace(/\\'/g, "'");
      else if (quote === '`') value = raw;
      else value = expand(unescapeDouble(raw), entries);
    } else {
      const end = src.indexOf('\n', k) < 0 ? src.length : src.indexOf('\n', k);
      const rawLine = src.slice(k, end);
      const hash = rawLine.indexOf('#');
      value = expand((hash >= 0 ? rawLine.slice(0, hash) : rawLine).trim(), entries);
      k = end;
    }
    entries.set(key, { value, line: startLine });
    i = k + 1;
    line++;
  }
  return entries;
}

function unescapeDouble(raw: string): string {
  // "\n" and "\r" become the characters; other backslash escapes keep the escaped character ("\$" stays for expand).
  return raw
    .replace(/\\n/g, '\n')
    .replace(/\\r/g, '\r')
    .replace(/\\([^$])/g, '$1');
}

function expand(value: string, entries: Map<string, EnvEntry>): string {
  return value.replace(/(\\)?\$(?!\()(\{)?(\w*)(\})?/g, (whole, escaped: string | undefined, open: string | undefined, name: string, close: string | undefined) => {
    if (escaped) return whole.slice(1);
    if (!name) return whole;
    if (open && !close) return whole;
    return entries.get(name)?.value ?? '';
  });
}

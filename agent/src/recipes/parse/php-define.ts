/**
 * Reads the plain settings out of a PHP settings file (civicrm.settings.php) without running it:
 * `define('NAME', 'value')` calls and `$var['key']['key'] = 'value';` / `$var = 'value';` assignments whose
 * value is one string literal. Anything computed (a concatenation, a function call, an interpolated string)
 * is reported with a null value, never guessed. Comments and strings are tokenized properly, so a commented-out
 * define does not count.
 */

export interface PhpValue {
  /** The string's value (a number literal's text), or null when the value is not one plain literal. */
  value: string | null;
  line: number;
}

export interface PhpAssignment extends PhpValue {
  /** "$civicrm_setting" */
  variable: string;
  /** The literal array keys, e.g. ["domain", "customFileUploadDir"]; [] for a plain variable. */
  keys: string[];
}

export interface PhpSettings {
  /** Every define of a name, in file order. */
  defines: Map<string, PhpValue[]>;
  assignments: PhpAssignment[];
}

export class PhpSyntaxError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(message);
  }
}

type Token =
  | { t: 'str'; v: string | null; line: number }
  | { t: 'var'; v: string; line: number }
  | { t: 'id'; v: string; line: number }
  | { t: 'num'; v: string; line: number }
  | { t: 'p'; v: string; line: number };

const IDENT_START = /[A-Za-z_\x80-\uffff]/;
const IDENT_PART = /[A-Za-z0-9_\x80-\uffff\\]/;

/** Throws PhpSyntaxError (with the line) on an unterminated string or comment. */
export function tokenizePhp(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  let line = 1;
  let inPhp = false;
  const n = text.length;
  const advance = (to: number) => {
    for (let k = i; k < to; k++) if (text[k] === '\n') line++;
    i = to;
  };
  while (i < n) {
    if (!inPhp) {
      const open = text.indexOf('<?', i);
      if (open < 0) break;
      advance(open);
      if (text.startsWith('<?php', i)) advance(i + 5);
      else if (text.startsWith('<?=', i)) advance(i + 3);
      else advance(i + 2);
      inPhp = true;
      continue;
    }
    const c = text[i]!;
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') {
      i++;
      continue;
    }
    if (text.startsWith('?>', i)) {
      inPhp = false;
      i += 2;
      continue;
    }
    if (c === '#' || text.startsWith('//', i)) {
      // A line comment ends at the newline or at "?>".
      let end = i;
      while (end < n && text[end] !== '\n' && !text.startsWith('?>', end)) end++;
      i = end;
      continue;
    }
    if (text.startsWith('/*', i)) {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) throw new PhpSyntaxError(line, 'a /* comment is never closed');
      advance(end + 2);
      continue;
    }
    if (c === "'") {
      const startLine = line;
      let value = '';
      let k = i + 1;
      for (;;) {
        if (k >= n) throw new PhpSyntaxError(startLine, 'a quoted string is never closed');
        const ch = text[k]!;
        if (ch === '\\' && (text[k + 1] === "'" || text[k + 1] === '\\')) {
          value += text[k + 1];
          k += 2;
          continue;
        }
        if (ch === "'") break;
        value += ch;
        k++;
      }
      advance(k + 1);
      tokens.push({ t: 'str', v: value, line: startLine });
      continue;
    }
    if (c === '"' || c === '`') {
      const startLine = line;
      const { value, end } = readDoubleQuoted(text, i + 1, c);
      if (end < 0) throw new PhpSyntaxError(startLine, 'a quoted string is never closed');
      advance(end + 1);
      tokens.push({ t: 'str', v: c === '`' ? null : value, line: startLine });
      continue;
    }
    if (text.startsWith('<<<', i)) {
      const startLine = line;
      const m = /^<<<[ \t]*(["']?)([A-Za-z_][A-Za-z0-9_]*)\1\r?\n/.exec(text.slice(i, i + 200));
      if (!m) throw new PhpSyntaxError(startLine, 'a heredoc (<<<) without a name');
      const label = m[2]!;
      const bodyStart = i + m[0].length;
      const closing = new RegExp(`\\n[ \\t]*${label}(?![A-Za-z0-9_])`, 'g');
      closing.lastIndex = bodyStart - 1;
      const found = closing.exec(text);
      if (!found) throw new PhpSyntaxError(startLine, `the heredoc ${label} is never closed`);
      const body = text.slice(bodyStart, found.index);
      advance(found.index + found[0].length);
      // A nowdoc ('LABEL') is literal; a heredoc interpolates, so only a body without "$" is a plain value.
      tokens.push({ t: 'str', v: m[1] === "'" || !body.includes('$') ? body : null, line: startLine });
      continue;
    }
    if (c === '$' && i + 1 < n && IDENT_START.test(text[i + 1]!)) {
      let k = i + 1;
      while (k < n && /[A-Za-z0-9_\x80-\uffff]/.test(text[k]!)) k++;
      tokens.push({ t: 'var', v: text.slice(i, k), line });
      i = k;
      continue;
    }
    if (IDENT_START.test(c) || (c === '\\' && i + 1 < n && IDENT_START.test(text[i + 1]!))) {
      let k = i + 1;
      while (k < n && IDENT_PART.test(text[k]!)) k++;
      tokens.push({ t: 'id', v: text.slice(i, k), line });
      i = k;
      continue;
    }
    if (/[0-9]/.test(c)) {
      let k = i + 1;
      while (k < n && /[0-9A-Za-z_.]/.test(text[k]!)) k++;
      tokens.push({ t: 'num', v: text.slice(i, k), line });
      i = k;
      continue;
    }
    tokens.push({ t: 'p', v: c, line });
    i++;
  }
  return tokens;
}

/** A double-quoted PHP string from `start` (after the quote): its value, or null when it interpolates variables. */
function readDoubleQuoted(text: string, start: number, quote: string): { value: string | null; end: number } {
  let value = '';
  let interpolates = false;
  let k = start;
  const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', v: '\v', e: '\x1b', f: '\f', '\\': '\\', $: '$', '"': '"' };
  while (k < text.length) {
    const ch = text[k]!;
    if (ch === quote) return { value: interpolates ? null : value, end: k };
    if (ch === '\\' && k + 1 < text.length) {
      const next = text[k + 1]!;
      if (next in simple && (next !== '"' || quote === '"')) {
        value += simple[next];
        k += 2;
        continue;
      }
      const octal = /^[0-7]{1,3}/.exec(text.slice(k + 1, k + 4));
      if (octal) {
        value += String.fromCharCode(parseInt(octal[0], 8) & 0xff);
        k += 1 + octal[0].length;
        continue;
      }
      const hex = /^x([0-9A-Fa-f]{1,2})/.exec(text.slice(k + 1, k + 4));
      if (hex) {
        value += String.fromCharCode(parseInt(hex[1]!, 16));
        k += 1 + hex[0].length;
        continue;
      }
      const uni = /^u\{([0-9A-Fa-f]+)\}/.exec(text.slice(k + 1, k + 12));
      if (uni) {
        value += String.fromCodePoint(parseInt(uni[1]!, 16));
        k += 1 + uni[0].length;
        continue;
      }
      value += ch;
      k++;
      continue;
    }
    if (ch === '$' && k + 1 < text.length && /[A-Za-z_{]/.test(text[k + 1]!)) interpolates = true;
    if (ch === '{' && text[k + 1] === '$') interpolates = true;
    value += ch;
    k++;
  }
  return { value: null, end: -1 };
}

/** Throws PhpSyntaxError on a file that cannot be tokenized. */
export function parsePhpSettings(text: string): PhpSettings {
  const tokens = tokenizePhp(text);
  const defines = new Map<string, PhpValue[]>();
  const assignments: PhpAssignment[] = [];
  const isP = (k: number, v: string) => tokens[k]?.t === 'p' && tokens[k]!.v === v;
  for (let k = 0; k < tokens.length; k++) {
    const tok = tokens[k]!;
    // define('NAME', 'value'[, …])  — function names are case-insensitive, maybe with a leading "\".
    if (tok.t === 'id' && tok.v.replace(/^\\/, '').toLowerCase() === 'define' && isP(k + 1, '(')) {
      const name = tokens[k + 2];
      if (name?.t !== 'str' || name.v === null || !isP(k + 3, ',')) continue;
      const valueTok = tokens[k + 4];
      // A number literal counts too (define('CIVICRM_DOMAIN_ID', 1)), as its text.
      const plain = (valueTok?.t === 'str' || valueTok?.t === 'num') && (isP(k + 5, ')') || isP(k + 5, ','));
      const list = defines.get(name.v) ?? [];
      list.push({ value: plain ? (valueTok as { v: string | null }).v : null, line: valueTok?.line ?? name.line });
      defines.set(name.v, list);
      continue;
    }
    // $var['k']['k'] = 'value';   (only at the start of a statement, so `if ($x == …)` does not count)
    if (tok.t === 'var' && (k === 0 || isP(k - 1, ';') || isP(k - 1, '{') || isP(k - 1, '}'))) {
      const keys: string[] = [];
      let j = k + 1;
      let literalKeys = true;
      while (isP(j, '[')) {
        const key = tokens[j + 1];
        if (key?.t === 'str' && key.v !== null && isP(j + 2, ']')) {
          keys.push(key.v);
          j += 3;
        } else {
          literalKeys = false;
          break;
        }
      }
      if (!literalKeys || !isP(j, '=') || isP(j + 1, '=') || isP(j + 1, '>')) continue;
      const valueTok = tokens[j + 1];
      const plain = valueTok?.t === 'str' && isP(j + 2, ';');
      assignments.push({ variable: tok.v, keys, value: plain ? (valueTok as { v: string | null }).v : null, line: valueTok?.line ?? tok.line });
    }
  }
  return { defines, assignments };
}

import { Transform, type TransformCallback } from 'node:stream';
import { LifeboatError } from '@lifeboat/shared';

/**
 * Reading a mariadb-dump/mysqldump stream as it passes, without ever holding more than a statement's head:
 *
 * - DumpScanner splits the stream into statements the way the `mariadb` client does (quotes with backslash
 *   escapes and doubled quotes, `-- `, `#` and block comments, executable comments such as `/*!40101 … *\/`,
 *   the client's `DELIMITER` command), recognises the few statements that matter here, and counts the row
 *   tuples of each `INSERT … VALUES (…),(…);` however large it is.
 * - DumpCounter (a pass-through Transform) turns that into databases, tables and exact row counts: the counts
 *   describe the dump itself, so they stay exact while writers change the live tables during the dump.
 * - DatabaseFilter (a Transform) prepares a dump for a restore under another name: it rewrites the dump's
 *   `USE`/`CREATE DATABASE`/`ALTER DATABASE` statements naming the dumped database, keeps only one database's
 *   statements of a several-database dump, and refuses any statement that would touch another database.
 */

/** A statement as far as this module cares; names are decoded (backticks removed, ``` `` ``` unescaped). */
export type DumpStatement =
  | { kind: 'insert'; database?: string; table: string }
  | { kind: 'create-table'; database?: string; table: string }
  | { kind: 'use'; database: string; name: NameSpan }
  | { kind: 'database'; verb: 'create' | 'alter' | 'drop'; database: string; name: NameSpan }
  | { kind: 'delimiter'; delimiter: string }
  | { kind: 'other' };

/** Where a database name sits in the stream: absolute byte offsets, end exclusive. */
export interface NameSpan {
  start: number;
  end: number;
}

export interface DumpScanHandler {
  /** A statement begins at this absolute offset (its first byte that is neither blank nor a comment). */
  start?(offset: number): void;
  /** The statement's kind, once its head has been read; `at` is the offset of the first byte not yet read. */
  statement?(statement: DumpStatement, at: number): void;
  /** One more row tuple in the current INSERT. */
  row?(): void;
  /** The statement ended just before this absolute offset (its delimiter included). */
  end?(offset: number): void;
  /** Between statements: every byte before this offset belongs to no statement still being read. */
  settled?(offset: number): void;
}

// Lexical states. Between statements:
const BETWEEN = 0;
const B_SLASH = 1; // "/": a comment, or a statement starting with an executable comment
const B_SLASH_STAR = 2; // "/*"
const B_SLASH_STAR_M = 3; // "/*M"
const B_DASH = 4; // "-"
const B_DASH2 = 5; // "--"
const B_LINE = 6; // in a "-- " or "#" comment
const B_BLOCK = 7; // in a /* comment */
const B_BLOCK_STAR = 8;
// Inside a statement:
const CODE = 10;
const SQ = 11; // 'string'
const SQ_ESC = 12;
const SQ_END = 13; // a quote in a string: its end, or the first of ''
const DQ = 14;
const DQ_ESC = 15;
const DQ_END = 16;
const BT = 17; // `identifier`
const BT_END = 18;
const C_SLASH = 19;
const C_OPEN = 20; // "/*"
const C_OPEN_M = 21; // "/*M"
const C_BLOCK = 22;
const C_BLOCK_STAR = 23;
const C_LINE = 24;
const C_VERSION = 25; // the digits after "/*!" or "/*M!"
const C_STAR = 26; // "*" inside an executable comment: maybe its end
const C_DASH = 27;
const C_DASH2 = 28;
const C_DELIM = 29; // part of a delimiter longer than one byte
const DELIM_LINE = 30; // the argument of the client's DELIMITER command, up to the end of the line

const QUOTE = 0x27;
const DQUOTE = 0x22;
const BACKTICK = 0x60;
const BACKSLASH = 0x5c;
const SLASH = 0x2f;
const STAR = 0x2a;
const DASH = 0x2d;
const HASH = 0x23;
const BANG = 0x21;
const LPAREN = 0x28;
const RPAREN = 0x29;
const NEWLINE = 0x0a;
const M = 0x4d;

/** Bytes of a bare word: letters, digits, "_", "$", and anything non-ASCII (unquoted UTF-8 identifiers). */
const WORD = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  WORD[b] = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f || b === 0x24 || b >= 0x80 ? 1 : 0;
}
/** Bytes that mean something in code outside a statement's head; everything else is skipped in bulk. */
const CODE_SPECIAL = new Uint8Array(256);
for (const b of [QUOTE, DQUOTE, BACKTICK, SLASH, STAR, DASH, HASH, LPAREN, RPAREN]) CODE_SPECIAL[b] = 1;

const isBlank = (b: number) => b <= 0x20;

/** A statement's head is read token by token until its kind is known; past this many bytes it is "other". */
const HEAD_LIMIT = 64 * 1024;
const TOKEN_LIMIT = 4096;

interface Token {
  type: 'word' | 'ident' | 'string' | 'punct';
  /** Words in upper case (for matching keywords), identifiers decoded, punctuation as itself. */
  text: string;
  /** As written (identifiers decoded). */
  raw: string;
  start: number;
  end: number;
}

export class DumpScanner {
  private state = BETWEEN;
  /** Absolute offset of the next byte to be written. */
  private offset = 0;
  private delimiter = Buffer.from(';');
  private delimiterMatched = 0;
  /** Offset where a between-statements "/" or "-" began: the statement starts there if it is not a comment. */
  private pendingStart = -1;
  private statementStart = -1;
  /** Inside an executable comment (/*!…, /*M!…): its closing "*\/" separates tokens and is otherwise ignored. */
  private inExecutableComment = false;
  /** The statement's head was read and its kind reported. */
  private decided = false;
  /** In the VALUES of an INSERT: parentheses at depth 0 open a row. */
  private countingRows = false;
  private depth = 0;
  private tokens: Token[] = [];
  /** The first token sat inside an executable comment (mariadb-dump's view stand-ins, triggers, events). */
  private headConditional = false;
  private tokenType: Token['type'] | null = null;
  private tokenBytes: number[] = [];
  private tokenStart = 0;
  private delimiterArgument: number[] = [];

  constructor(private readonly handler: DumpScanHandler) {}

  /** Absolute offset of the next byte: the number of bytes scanned so far. */
  get position(): number {
    return this.offset;
  }

  write(chunk: Buffer): void {
    const n = chunk.length;
    const base = this.offset;
    let i = 0;
    while (i < n) {
      const state = this.state;
      // Fast paths: the bulk of a dump is string contents and already-classified code.
      if (state === SQ || state === DQ) {
        const quote = state === SQ ? QUOTE : DQUOTE;
        while (i < n) {
          const b = chunk[i]!;
          if (b === quote || b === BACKSLASH) break;
          i++;
        }
        if (i === n) break;
      } else if (state === CODE && this.decided) {
        const delim0 = this.delimiter[0]!;
        while (i < n) {
          const b = chunk[i]!;
          if (CODE_SPECIAL[b] === 1 || b === delim0) break;
          i++;
        }
        if (i === n) break;
      }
      this.offset = base + i;
      this.step(chunk[i]!);
      i++;
    }
    this.offset = base + n;
    if (this.state === BETWEEN || this.state === B_LINE || this.state === B_BLOCK || this.state === B_BLOCK_STAR) {
      this.handler.settled?.(this.offset);
    } else if (this.pendingStart >= 0) {
      this.handler.settled?.(this.pendingStart);
    }
  }

  /**
   * The end of the stream: null when it ended between statements, else what is wrong (it stops inside a
   * string, a comment, or a statement whose delimiter never came).
   */
  end(): string | null {
    switch (this.state) {
      case BETWEEN:
      case B_LINE:
        return null;
      case B_SLASH:
      case B_DASH:
      case B_DASH2:
        return 'the dump ends with a stray character';
      case B_SLASH_STAR:
      case B_SLASH_STAR_M:
      case B_BLOCK:
      case B_BLOCK_STAR:
      case C_OPEN:
      case C_OPEN_M:
      case C_BLOCK:
      case C_BLOCK_STAR:
        return 'the dump ends inside a comment';
      case SQ:
      case SQ_ESC:
      case DQ:
      case DQ_ESC:
      case BT:
        return 'the dump ends inside a quoted string';
      default:
        return 'the dump ends inside a statement that has no delimiter';
    }
  }

  private step(b: number): void {
    switch (this.state) {
      case BETWEEN:
        if (isBlank(b)) return;
        if (b === SLASH || b === DASH) {
          this.pendingStart = this.offset;
          this.state = b === SLASH ? B_SLASH : B_DASH;
          return;
        }
        if (b === HASH) {
          this.state = B_LINE;
          return;
        }
        this.beginStatement(this.offset);
        this.code(b);
        return;
      case B_SLASH:
        if (b === STAR) this.state = B_SLASH_STAR;
        else this.startPending('/', b);
        return;
      case B_SLASH_STAR:
        if (b === BANG) this.startExecutableComment();
        else if (b === M) this.state = B_SLASH_STAR_M;
        else {
          this.pendingStart = -1;
          this.state = B_BLOCK;
          this.step(b);
        }
        return;
      case B_SLASH_STAR_M:
        if (b === BANG) this.startExecutableComment();
        else {
          this.pendingStart = -1;
          this.state = B_BLOCK;
          this.step(b);
        }
        return;
      case B_DASH:
        if (b === DASH) this.state = B_DASH2;
        else this.startPending('-', b);
        return;
      case B_DASH2:
        if (isBlank(b)) {
          this.pendingStart = -1;
          this.state = b === NEWLINE ? BETWEEN : B_LINE;
        } else this.startPending('--', b);
        return;
      case B_LINE:
        if (b === NEWLINE) this.state = BETWEEN;
        return;
      case B_BLOCK:
        if (b === STAR) this.state = B_BLOCK_STAR;
        return;
      case B_BLOCK_STAR:
        if (b === SLASH) this.state = BETWEEN;
        else if (b !== STAR) this.state = B_BLOCK;
        return;
      case CODE:
        this.code(b);
        return;
      case SQ:
      case DQ:
        // Only a quote or a backslash reaches here (the fast path skips the rest).
        if (b === BACKSLASH) this.state = this.state === SQ ? SQ_ESC : DQ_ESC;
        else if (b === (this.state === SQ ? QUOTE : DQUOTE)) this.state = this.state === SQ ? SQ_END : DQ_END;
        else this.pushTokenByte(b);
        return;
      case SQ_ESC:
        this.state = SQ;
        return;
      case DQ_ESC:
        this.state = DQ;
        return;
      case SQ_END:
      case DQ_END: {
        const quote = this.state === SQ_END ? QUOTE : DQUOTE;
        if (b === quote) {
          this.state = quote === QUOTE ? SQ : DQ;
          return;
        }
        this.state = CODE;
        this.finishToken();
        this.code(b);
        return;
      }
      case BT:
        if (b === BACKTICK) this.state = BT_END;
        else this.pushTokenByte(b);
        return;
      case BT_END:
        if (b === BACKTICK) {
          this.pushTokenByte(b);
          this.state = BT;
          return;
        }
        this.state = CODE;
        this.finishToken();
        this.code(b);
        return;
      case C_SLASH:
        if (b === STAR) {
          this.state = C_OPEN;
          return;
        }
        this.state = CODE;
        this.punct('/', this.offset - 1);
        this.code(b);
        return;
      case C_OPEN:
        if (b === BANG) {
          this.inExecutableComment = true;
          this.state = C_VERSION;
        } else if (b === M) this.state = C_OPEN_M;
        else {
          this.state = C_BLOCK;
          this.step(b);
        }
        return;
      case C_OPEN_M:
        if (b === BANG) {
          this.inExecutableComment = true;
          this.state = C_VERSION;
        } else {
          this.state = C_BLOCK;
          this.step(b);
        }
        return;
      case C_VERSION:
        if (b >= 0x30 && b <= 0x39) return;
        this.state = CODE;
        this.code(b);
        return;
      case C_BLOCK:
        if (b === STAR) this.state = C_BLOCK_STAR;
        return;
      case C_BLOCK_STAR:
        if (b === SLASH) this.state = CODE;
        else if (b !== STAR) this.state = C_BLOCK;
        return;
      case C_LINE:
        if (b === NEWLINE) this.state = CODE;
        return;
      case C_STAR:
        if (b === SLASH) {
          this.inExecutableComment = false;
          this.state = CODE;
          return;
        }
        this.state = CODE;
        this.punct('*', this.offset - 1);
        this.code(b);
        return;
      case C_DASH:
        if (b === DASH) {
          this.state = C_DASH2;
          return;
        }
        this.state = CODE;
        this.punct('-', this.offset - 1);
        this.code(b);
        return;
      case C_DASH2:
        if (isBlank(b)) {
          this.state = b === NEWLINE ? CODE : C_LINE;
          return;
        }
        this.state = CODE;
        this.punct('-', this.offset - 2);
        this.punct('-', this.offset - 1);
        this.code(b);
        return;
      case C_DELIM:
        if (b === this.delimiter[this.delimiterMatched]) {
          this.delimiterMatched++;
          if (this.delimiterMatched === this.delimiter.length) this.endStatement(this.offset + 1);
          return;
        }
        this.delimiterMatched = 0;
        this.state = CODE;
        this.code(b);
        return;
      case DELIM_LINE:
        if (b === NEWLINE) {
          const argument = Buffer.from(this.delimiterArgument).toString('utf8').trim().split(/\s+/)[0] ?? '';
          this.delimiterArgument = [];
          if (argument !== '') this.delimiter = Buffer.from(argument, 'utf8');
          this.handler.statement?.({ kind: 'delimiter', delimiter: this.delimiter.toString('utf8') }, this.offset + 1);
          this.endStatement(this.offset + 1);
        } else if (this.delimiterArgument.length < TOKEN_LIMIT) this.delimiterArgument.push(b);
        return;
    }
  }

  /** One byte of code (outside strings and comments). */
  private code(b: number): void {
    const delimiter = this.delimiter;
    if (b === delimiter[0]) {
      this.finishToken();
      if (delimiter.length === 1) {
        this.endStatement(this.offset + 1);
      } else {
        this.delimiterMatched = 1;
        this.state = C_DELIM;
      }
      return;
    }
    if (this.tokenType === 'word') {
      if (WORD[b] === 1) {
        this.pushTokenByte(b);
        return;
      }
      this.finishToken();
      if (this.state !== CODE) {
        // The word decided the head and switched state (the DELIMITER command).
        this.step(b);
        return;
      }
    }
    switch (b) {
      case QUOTE:
        this.startToken('string');
        this.state = SQ;
        return;
      case DQUOTE:
        this.startToken('string');
        this.state = DQ;
        return;
      case BACKTICK:
        this.startToken('ident');
        this.state = BT;
        return;
      case SLASH:
        this.state = C_SLASH;
        return;
      case DASH:
        this.state = C_DASH;
        return;
      case HASH:
        this.state = C_LINE;
        return;
      case STAR:
        if (this.inExecutableComment) this.state = C_STAR;
        else this.punct('*', this.offset);
        return;
      case LPAREN:
        if (this.countingRows) {
          if (this.depth === 0) this.handler.row?.();
          this.depth++;
        } else this.punct('(', this.offset);
        return;
      case RPAREN:
        if (this.countingRows) {
          if (this.depth > 0) this.depth--;
        } else this.punct(')', this.offset);
        return;
    }
    if (this.decided) return;
    if (WORD[b] === 1) {
      this.startToken('word');
      this.pushTokenByte(b);
    } else if (!isBlank(b)) this.punct(String.fromCharCode(b), this.offset);
  }

  private startPending(text: string, b: number): void {
    const start = this.pendingStart;
    this.pendingStart = -1;
    this.beginStatement(start);
    this.state = CODE;
    for (let k = 0; k < text.length; k++) this.punct(text[k]!, start + k);
    this.code(b);
  }

  private startExecutableComment(): void {
    const start = this.pendingStart;
    this.pendingStart = -1;
    this.beginStatement(start);
    this.inExecutableComment = true;
    this.state = C_VERSION;
  }

  private beginStatement(start: number): void {
    this.state = CODE;
    this.statementStart = start;
    this.decided = false;
    this.countingRows = false;
    this.depth = 0;
    this.tokens = [];
    this.headConditional = false;
    this.tokenType = null;
    this.tokenBytes = [];
    this.delimiterMatched = 0;
    this.handler.start?.(start);
  }

  private endStatement(end: number): void {
    this.finishToken();
    if (!this.decided) this.decide(classify(this.tokens, this.headConditional, true) ?? { kind: 'other' });
    this.state = BETWEEN;
    this.inExecutableComment = false;
    this.decided = false;
    this.countingRows = false;
    this.tokens = [];
    this.statementStart = -1;
    this.handler.end?.(end);
  }

  private startToken(type: Token['type']): void {
    if (this.decided) return;
    this.tokenType = type;
    this.tokenBytes = [];
    this.tokenStart = this.offset;
  }

  private pushTokenByte(b: number): void {
    if (this.tokenType !== null && this.tokenBytes.length < TOKEN_LIMIT) this.tokenBytes.push(b);
  }

  private punct(text: string, at: number): void {
    if (this.decided) return;
    this.addToken({ type: 'punct', text, raw: text, start: at, end: at + 1 });
  }

  private finishToken(): void {
    const type = this.tokenType;
    if (type === null) return;
    this.tokenType = null;
    if (this.decided) return;
    const raw = Buffer.from(this.tokenBytes).toString('utf8');
    this.tokenBytes = [];
    // An identifier's span covers its backticks; this.offset is the byte after the token.
    this.addToken({ type, text: type === 'word' ? raw.toUpperCase() : raw, raw, start: this.tokenStart, end: this.offset });
  }

  private addToken(token: Token): void {
    if (this.tokens.length === 0) this.headConditional = this.inExecutableComment;
    this.tokens.push(token);
    const tooLong = this.offset - this.statementStart > HEAD_LIMIT;
    const statement = classify(this.tokens, this.headConditional, false) ?? (tooLong ? { kind: 'other' as const } : null);
    if (statement) this.decide(statement);
  }

  private decide(statement: DumpStatement | 'delimiter-command'): void {
    this.decided = true;
    this.tokens = [];
    if (statement === 'delimiter-command') {
      this.state = DELIM_LINE;
      this.delimiterArgument = [];
      // Reported when the line ends, with the new delimiter.
      return;
    }
    if (statement.kind === 'insert') this.countingRows = true;
    this.handler.statement?.(statement, this.offset);
  }
}

const INSERT_MODIFIERS = new Set(['LOW_PRIORITY', 'DELAYED', 'HIGH_PRIORITY', 'IGNORE']);
const ALTER_DATABASE_CLAUSES = new Set(['CHARACTER', 'CHARSET', 'DEFAULT', 'COLLATE', 'COMMENT', 'UPGRADE']);

/**
 * The kind of a statement from its first tokens, or null when more tokens are needed (never null when
 * `final`, at the statement's end).
 */
function classify(tokens: readonly Token[], conditional: boolean, final: boolean): DumpStatement | 'delimiter-command' | null {
  const word = (i: number) => (tokens[i]?.type === 'word' ? tokens[i].text : undefined);
  const need = (i: number) => i >= tokens.length && !final;
  const first = word(0);
  if (first === undefined) return tokens.length === 0 && !final ? null : { kind: 'other' };
  switch (first) {
    case 'DELIMITER':
      if (tokens.length === 1 && !final) return 'delimiter-command';
      return { kind: 'other' };
    case 'INSERT':
    case 'REPLACE': {
      let i = 1;
      while (INSERT_MODIFIERS.has(word(i) ?? '')) i++;
      if (need(i)) return null;
      if (word(i) === 'INTO') i++;
      const name = tableName(tokens, i, final);
      if (name === null) return null;
      if (name === undefined) return { kind: 'other' };
      i = name.next;
      if (tokens[i]?.type === 'punct' && tokens[i]!.text === '(') {
        // A column list: skip to its closing parenthesis.
        let depth = 0;
        for (; i < tokens.length; i++) {
          const t = tokens[i]!;
          if (t.type === 'punct' && t.text === '(') depth++;
          if (t.type === 'punct' && t.text === ')' && --depth === 0) break;
        }
        if (i >= tokens.length) return final ? { kind: 'other' } : null;
        i++;
      }
      if (need(i)) return null;
      const values = word(i);
      if (values === 'VALUES' || values === 'VALUE') return { kind: 'insert', ...name.name };
      return { kind: 'other' };
    }
    case 'CREATE': {
      let i = 1;
      if (word(1) === 'OR') {
        if (need(2)) return null;
        if (word(2) === 'REPLACE') i = 3;
      }
      if (need(i)) return null;
      const what = word(i);
      if (what === 'TABLE') {
        i = skipIf(tokens, i + 1, ['IF', 'NOT', 'EXISTS']);
        const name = tableName(tokens, i, final);
        if (name === null) return null;
        // Executable-comment CREATE TABLEs are mariadb-dump's stand-ins for views, not tables.
        if (name === undefined || conditional) return { kind: 'other' };
        return { kind: 'create-table', ...name.name };
      }
      if (what === 'DATABASE' || what === 'SCHEMA') return databaseName(tokens, skipIf(tokens, i + 1, ['IF', 'NOT', 'EXISTS']), 'create', final);
      return need(i) ? null : { kind: 'other' };
    }
    case 'ALTER': {
      if (need(1)) return null;
      if (word(1) !== 'DATABASE' && word(1) !== 'SCHEMA') return { kind: 'other' };
      if (need(2)) return null;
      // "ALTER DATABASE CHARACTER SET …" names no database: it alters the current one.
      if (tokens[2]?.type === 'word' && ALTER_DATABASE_CLAUSES.has(tokens[2].text)) return { kind: 'other' };
      return databaseName(tokens, 2, 'alter', final);
    }
    case 'DROP': {
      if (need(1)) return null;
      if (word(1) !== 'DATABASE' && word(1) !== 'SCHEMA') return { kind: 'other' };
      return databaseName(tokens, skipIf(tokens, 2, ['IF', 'EXISTS']), 'drop', final);
    }
    case 'USE': {
      if (need(1)) return null;
      const t = tokens[1];
      if (t && (t.type === 'ident' || t.type === 'word')) return { kind: 'use', database: nameOf(t), name: { start: t.start, end: t.end } };
      return { kind: 'other' };
    }
    default:
      return { kind: 'other' };
  }
}

/** Skips an optional run of words (IF NOT EXISTS), as far as they match. */
function skipIf(tokens: readonly Token[], i: number, words: readonly string[]): number {
  if (tokens[i]?.type !== 'word' || tokens[i]!.text !== words[0]) return i;
  let k = 0;
  while (k < words.length && tokens[i + k]?.type === 'word' && tokens[i + k]!.text === words[k]) k++;
  return i + k;
}

/**
 * A table name at i, "name" or "db.name": null when more tokens are needed, undefined when there is none.
 */
function tableName(
  tokens: readonly Token[],
  i: number,
  final: boolean,
): { name: { database?: string; table: string }; next: number } | null | undefined {
  const t = tokens[i];
  if (!t) return final ? undefined : null;
  if (t.type !== 'ident' && t.type !== 'word') return undefined;
  const dot = tokens[i + 1];
  if (!dot) return final ? { name: { table: nameOf(t) }, next: i + 1 } : null;
  if (dot.type === 'punct' && dot.text === '.') {
    const table = tokens[i + 2];
    if (!table) return final ? undefined : null;
    if (table.type !== 'ident' && table.type !== 'word') return undefined;
    return { name: { database: nameOf(t), table: nameOf(table) }, next: i + 3 };
  }
  return { name: { table: nameOf(t) }, next: i + 1 };
}

function databaseName(tokens: readonly Token[], i: number, verb: 'create' | 'alter' | 'drop', final: boolean): DumpStatement | null {
  const t = tokens[i];
  if (!t) return final ? { kind: 'other' } : null;
  if (t.type !== 'ident' && t.type !== 'word') return { kind: 'other' };
  return { kind: 'database', verb, database: nameOf(t), name: { start: t.start, end: t.end } };
}

/** Words are matched upper-cased; as a name, a bare word keeps its own case. */
function nameOf(t: Token): string {
  return t.raw;
}

// ── Counting ──────────────────────────────────────────────────────────────────

export interface DumpedTable {
  name: string;
  rows: number;
}

export interface DumpedDatabase {
  name: string;
  tables: DumpedTable[];
}

export interface DumpContents {
  /** In the order the dump creates them; tables without an INSERT have 0 rows. */
  databases: DumpedDatabase[];
  bytes: number;
  /** Null when the dump is whole: every statement ended and mariadb-dump's "-- Dump completed" line came last. */
  problem: string | null;
}

const TRAILER = '-- Dump completed';
const TAIL_BYTES = 512;

/**
 * A pass-through Transform that counts what the dump holds as it streams by. `database` names the database
 * of a dump made without --databases (which has no USE statements); a dump made with --databases says it.
 * Read `contents()` once the stream has ended.
 */
export class DumpCounter extends Transform {
  private readonly scanner: DumpScanner;
  private readonly databases = new Map<string, Map<string, DumpedTable>>();
  private current: string | null;
  private inserting: DumpedTable | null = null;
  private tail: Buffer = Buffer.alloc(0);
  private bytes = 0;
  private problem: string | null = null;
  private done = false;

  constructor(options: { database?: string } = {}) {
    super();
    this.current = options.database ?? null;
    if (this.current !== null) this.databases.set(this.current, new Map());
    this.scanner = new DumpScanner({
      statement: (statement) => this.onStatement(statement),
      row: () => {
        if (this.inserting) this.inserting.rows++;
      },
      end: () => {
        this.inserting = null;
      },
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.scanner.write(chunk);
    this.bytes += chunk.length;
    this.tail = chunk.length >= TAIL_BYTES ? chunk.subarray(chunk.length - TAIL_BYTES) : Buffer.concat([this.tail, chunk]).subarray(-TAIL_BYTES);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.finish();
    callback();
  }

  /** What the dump held; complete only once the stream ended (before that, `problem` says so). */
  contents(): DumpContents {
    const databases = [...this.databases].map(([name, tables]) => ({ name, tables: [...tables.values()].map((t) => ({ ...t })) }));
    const problem = this.done ? this.problem : 'the dump has not ended yet';
    return { databases, bytes: this.bytes, problem };
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    const ended = this.scanner.end();
    if (this.bytes === 0) this.problem ??= 'the dump is empty';
    else if (ended) this.problem ??= ended;
    else if (!lastLine(this.tail).startsWith(TRAILER)) this.problem ??= `the dump does not end with "${TRAILER}": it was cut short`;
  }

  private onStatement(statement: DumpStatement): void {
    if (statement.kind === 'use') {
      this.current = statement.database;
      this.database(statement.database);
    } else if (statement.kind === 'database' && statement.verb === 'create') {
      this.database(statement.database);
    } else if (statement.kind === 'create-table' || statement.kind === 'insert') {
      const database = statement.database ?? this.current;
      if (database === null) {
        this.problem ??= `table \`${statement.table}\` comes before any USE statement: which database it belongs to is unknown`;
        return;
      }
      const tables = this.database(database);
      let table = tables.get(statement.table);
      if (!table) tables.set(statement.table, (table = { name: statement.table, rows: 0 }));
      if (statement.kind === 'insert') this.inserting = table;
    }
  }

  private database(name: string): Map<string, DumpedTable> {
    let tables = this.databases.get(name);
    if (!tables) this.databases.set(name, (tables = new Map()));
    return tables;
  }
}

function lastLine(tail: Buffer): string {
  const text = tail.toString('latin1').trimEnd();
  return text.slice(text.lastIndexOf('\n') + 1);
}

// ── Restoring one database under another name ────────────────────────────────

export interface DatabaseFilterOptions {
  /** The dumped database whose statements are restored. */
  source: string;
  /** Its name in the restore. */
  target: string;
  /**
   * "single": a dump of one database made without --databases: it has no USE statements, so its statements
   * run in the target; one naming any other database stops the restore.
   * "select": a dump of several databases (--databases): only the statements after `USE source` (and the
   * session settings before the first USE) are kept; the other databases' are left out.
   */
  mode: 'single' | 'select';
}

/** A database statement longer than this is not one mariadb-dump writes. */
const REWRITE_LIMIT = 1024 * 1024;

type Disposition = 'between' | 'undecided' | 'pass' | 'drop' | 'rewrite';

/**
 * Streams a dump on to the `mariadb` client, rewritten so that it writes only into the target database.
 * Statements pass through as they arrive; only a statement's head (until its kind is known) and the short
 * database statements it rewrites are held back.
 */
export class DatabaseFilter extends Transform {
  private readonly scanner: DumpScanner;
  private current: string | null;
  private disposition: Disposition = 'between';
  /** Bytes before this absolute offset were passed on or left out. */
  private mark = 0;
  /** The bytes from `mark` to `chunkStart`, held back. */
  private held: Buffer = Buffer.alloc(0);
  private chunk: Buffer = Buffer.alloc(0);
  private chunkStart = 0;
  private statementStart = 0;
  private nameSpan: NameSpan | null = null;
  private readonly out: Buffer[] = [];
  /** Statements of other databases left out ("select" mode). */
  skippedStatements = 0;

  constructor(private readonly options: DatabaseFilterOptions) {
    super();
    this.current = options.mode === 'single' ? options.source : null;
    this.scanner = new DumpScanner({
      start: (offset) => {
        this.passBetween(offset);
        this.statementStart = offset;
        this.disposition = 'undecided';
      },
      statement: (statement, at) => this.onStatement(statement, at),
      end: (offset) => this.onEnd(offset),
      settled: (offset) => {
        if (this.disposition === 'between') this.passBetween(offset);
      },
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.chunk = chunk;
    this.chunkStart = this.scanner.position;
    try {
      this.scanner.write(chunk);
      const end = this.chunkStart + chunk.length;
      if (this.disposition === 'pass') this.out.push(this.takeBytes(end));
      else if (this.disposition === 'drop') this.takeBytes(end);
      else {
        // Held back until the statement's kind is known (or, for a rewritten one, until its end): a copy, so
        // the chunk itself is not kept alive.
        const pending = Buffer.from(this.takeBytes(end));
        if (pending.length > REWRITE_LIMIT) throw new LifeboatError('restore_failed', 'the dump holds a database statement longer than 1 MiB, which mariadb-dump does not write; refusing to restore it');
        this.held = pending;
        this.mark = end - pending.length;
      }
      // Everything of this chunk is now passed on, left out or held.
      this.chunk = Buffer.alloc(0);
      this.chunkStart = end;
    } catch (err) {
      callback(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.flushOut();
    callback();
  }

  override _flush(callback: TransformCallback): void {
    // A dump that stops inside a statement or a string was cut short: fail before the client sees the end of
    // its input, at which it would run the piece of statement it holds.
    const problem = this.scanner.end();
    if (problem) {
      callback(new LifeboatError('restore_failed', `the dump is incomplete: ${problem}`));
      return;
    }
    // What is left is blank lines and comments after the last statement.
    const rest = this.takeBytes(this.mark + this.held.length);
    if (this.disposition !== 'drop') this.out.push(rest);
    this.flushOut();
    callback();
  }

  private flushOut(): void {
    for (const piece of this.out) if (piece.length > 0) this.push(piece);
    this.out.length = 0;
  }

  /** The bytes from `mark` up to `upTo` (absolute), which then count as handled. */
  private takeBytes(upTo: number): Buffer {
    const chunkStart = this.chunkStart;
    let out: Buffer;
    if (upTo <= chunkStart) {
      out = this.held.subarray(0, upTo - this.mark);
      this.held = this.held.subarray(upTo - this.mark);
    } else if (this.mark < chunkStart) {
      out = Buffer.concat([this.held, this.chunk.subarray(0, upTo - chunkStart)]);
      this.held = Buffer.alloc(0);
    } else {
      out = this.chunk.subarray(this.mark - chunkStart, upTo - chunkStart);
    }
    this.mark = Math.max(this.mark, upTo);
    return out;
  }

  /** Comments and blank lines between statements go with the database they are in. */
  private passBetween(upTo: number): void {
    const bytes = this.takeBytes(upTo);
    if (this.current === null || this.current === this.options.source) this.out.push(bytes);
  }

  private onStatement(statement: DumpStatement, at: number): void {
    const disposition = this.dispose(statement);
    this.disposition = disposition;
    if (disposition === 'pass') this.out.push(this.takeBytes(at));
    else if (disposition === 'drop') {
      this.takeBytes(at);
      this.skippedStatements++;
    } else if (statement.kind === 'use' || statement.kind === 'database') this.nameSpan = statement.name;
  }

  private onEnd(offset: number): void {
    const bytes = this.takeBytes(offset);
    if (this.disposition === 'rewrite' && this.nameSpan) {
      const before = this.nameSpan.start - this.statementStart;
      const after = this.nameSpan.end - this.statementStart;
      this.out.push(bytes.subarray(0, before), Buffer.from(quoteIdentifier(this.options.target), 'utf8'), bytes.subarray(after));
    } else if (this.disposition !== 'drop') this.out.push(bytes);
    this.nameSpan = null;
    this.disposition = 'between';
  }

  private dispose(statement: DumpStatement): Disposition {
    const { source, mode } = this.options;
    const ours = this.current === null || this.current === source;
    switch (statement.kind) {
      case 'delimiter':
        // The client's delimiter must follow the dump whichever statements are left out.
        return 'pass';
      case 'use':
        this.current = statement.database;
        if (statement.database === source) return 'rewrite';
        if (mode === 'single') throw this.foreign(`USE ${quoteIdentifier(statement.database)}`);
        return 'drop';
      case 'database':
        if (statement.verb === 'drop') throw new LifeboatError('restore_failed', `the dump drops database ${quoteIdentifier(statement.database)}; refusing to run it`);
        if (statement.database === source) return 'rewrite';
        if (mode === 'single') throw this.foreign(`${statement.verb.toUpperCase()} DATABASE ${quoteIdentifier(statement.database)}`);
        return 'drop';
      case 'insert':
      case 'create-table':
        if (statement.database !== undefined && ours) {
          throw new LifeboatError('restore_failed', `the dump names table ${quoteIdentifier(statement.database)}.${quoteIdentifier(statement.table)} with its database, which mariadb-dump does not write; refusing to restore it`);
        }
        return ours ? 'pass' : 'drop';
      case 'other':
        return ours ? 'pass' : 'drop';
    }
  }

  private foreign(what: string): LifeboatError {
    return new LifeboatError(
      'restore_failed',
      `the dump of database ${quoteIdentifier(this.options.source)} contains "${what}", which would write outside the target database; refusing to go on`,
    );
  }
}

/** A MariaDB identifier in backticks. */
export function quoteIdentifier(name: string): string {
  return '`' + name.replaceAll('`', '``') + '`';
}

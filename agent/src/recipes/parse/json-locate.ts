/**
 * Finds every string VALUE in a JSON text with where it is (offsets) and under which keys, so a few values can
 * be replaced in place: the rest of the file (formatting, key order, large numbers) stays byte for byte as the
 * application wrote it. A syntax error says the line.
 */

export type JsonPath = (string | number)[];

export interface JsonStringValue {
  path: JsonPath;
  /** Offsets of the string token, quotes included. */
  start: number;
  end: number;
  value: string;
}

export class JsonSyntaxError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(message);
  }
}

export function locateJsonStrings(text: string): JsonStringValue[] {
  const found: JsonStringValue[] = [];
  let i = 0;
  const lineAt = (offset: number) => {
    let line = 1;
    for (let k = 0; k < offset && k < text.length; k++) if (text[k] === '\n') line++;
    return line;
  };
  const fail = (message: string): never => {
    throw new JsonSyntaxError(lineAt(i), message);
  };
  const ws = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  const readString = (): { value: string; start: number; end: number } => {
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++;
      else if (text.charCodeAt(i) < 0x20) fail('a control character inside a string');
      i++;
    }
    if (i >= text.length) {
      i = start;
      fail('a string is never closed');
    }
    i++;
    let value: string;
    try {
      value = JSON.parse(text.slice(start, i)) as string;
    } catch {
      i = start;
      return fail('a string with an invalid escape');
    }
    return { value, start, end: i };
  };
  const value = (path: JsonPath): void => {
    ws();
    const ch = text[i];
    if (ch === '{') {
      i++;
      ws();
      if (text[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a key in double quotes');
        const key = readString().value;
        ws();
        if (text[i] !== ':') fail(`expected ":" after the key "${key}"`);
        i++;
        value([...path, key]);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return;
        }
        fail('expected "," or "}"');
      }
    }
    if (ch === '[') {
      i++;
      ws();
      if (text[i] === ']') {
        i++;
        return;
      }
      for (let index = 0; ; index++) {
        value([...path, index]);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return;
        }
        fail('expected "," or "]"');
      }
    }
    if (ch === '"') {
      const s = readString();
      found.push({ path, ...s });
      return;
    }
    const literal = /^(?:true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(text.slice(i, i + 400));
    if (!literal) fail(ch === undefined ? 'the text ends where a value should be' : `unexpected "${ch}"`);
    i += literal![0].length;
  };
  value([]);
  ws();
  if (i < text.length) fail('unexpected text after the end of the JSON value');
  return found;
}

/** "services.pydio.grpc.data.sync.pydiods1.PeerAddress", "defaults.sites[0].Binds[0]". */
export function formatJsonPath(path: JsonPath): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out || '(root)';
}

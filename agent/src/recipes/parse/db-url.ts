/**
 * Database URLs as applications write them:
 * - CiviCRM's PEAR-style DSN `mysql://user:pass@host[:port]/db?new_link=true`, also `mysqli://`,
 *   `mysql://user:pass@unix(/run/mysqld/mysqld.sock)/db` and `host:/path/to.sock`;
 * - Rails' DATABASE_URL `postgres://user:pass@host:port/db?host=/socket/dir`.
 * User and password are percent-decoded (CiviCRM's docs ask for URL-encoded special characters; PEAR decodes
 * them with rawurldecode). The userinfo ends at the LAST "@", as PEAR's parser does, so a raw "@" in a
 * password still parses.
 */

export interface DatabaseUrl {
  /** "mysql", "mysqli", "postgres", "postgresql" (lowercase). */
  scheme: string;
  user?: string;
  password?: string;
  host?: string;
  port?: number;
  /** A Unix socket path (MySQL) or socket directory (PostgreSQL's ?host=/dir). */
  socket?: string;
  database?: string;
  params: Map<string, string>;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; problem: string };

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    // A lone "%" that is not an escape: PHP's rawurldecode leaves it as it is.
    return s;
  }
}

export function parseDatabaseUrl(url: string): ParseResult<DatabaseUrl> {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s.exec(url.trim());
  if (!m) return { ok: false, problem: 'not a database URL of the form scheme://user:password@host/database' };
  const scheme = m[1]!.toLowerCase();
  let rest = m[2]!;
  const out: DatabaseUrl = { scheme, params: new Map() };
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const user = decode(colon >= 0 ? userinfo.slice(0, colon) : userinfo);
    if (user) out.user = user;
    if (colon >= 0) out.password = decode(userinfo.slice(colon + 1));
  }
  // protocol(address)/database, e.g. unix(/run/mysqld/mysqld.sock)/civicrm or tcp(db:3306)/civicrm
  let hostspec: string;
  let tail: string;
  const proto = /^([a-z]+)\((.*?)\)\/?(.*)$/s.exec(rest);
  if (proto) {
    const [, protocol, address, after] = proto;
    tail = after!;
    if (protocol === 'unix') {
      out.socket = decode(address!);
      hostspec = '';
    } else if (protocol === 'tcp') {
      hostspec = address!;
    } else {
      return { ok: false, problem: `unknown connection protocol "${protocol}"` };
    }
  } else if (/^[^/:]*:\//.test(rest)) {
    // host:/path/to/mysqld.sock/database — the socket path runs to the last "/" before the database.
    const q = rest.indexOf('?');
    const beforeQuery = q >= 0 ? rest.slice(0, q) : rest;
    const lastSlash = beforeQuery.lastIndexOf('/');
    const colon = rest.indexOf(':');
    hostspec = rest.slice(0, colon);
    out.socket = decode(rest.slice(colon + 1, lastSlash));
    tail = rest.slice(lastSlash + 1);
  } else {
    const slash = rest.indexOf('/');
    hostspec = slash >= 0 ? rest.slice(0, slash) : rest;
    tail = slash >= 0 ? rest.slice(slash + 1) : '';
    // An old PEAR form "protocol+hostspec".
    const plus = /^(tcp|unix)\+(.*)$/.exec(hostspec);
    if (plus) hostspec = plus[1] === 'unix' ? '' : plus[2]!;
    if (plus?.[1] === 'unix') out.socket = decode(plus[2]!);
  }
  if (hostspec) {
    const hostPort = splitHostPort(decode(hostspec));
    if (!hostPort.ok) return hostPort;
    if (hostPort.value.host) out.host = hostPort.value.host;
    if (hostPort.value.port !== undefined) out.port = hostPort.value.port;
    if (hostPort.value.socket) out.socket = hostPort.value.socket;
  }
  const q = tail.indexOf('?');
  const database = decode(q >= 0 ? tail.slice(0, q) : tail);
  if (database) out.database = database;
  if (q >= 0) {
    for (const pair of tail.slice(q + 1).split('&')) {
      if (!pair) continue;
      const eq = pair.indexOf('=');
      out.params.set(decode(eq >= 0 ? pair.slice(0, eq) : pair), decode(eq >= 0 ? pair.slice(eq + 1) : ''));
    }
  }
  // PostgreSQL: ?host=/var/run/postgresql names a socket directory; ?port=, ?user=, ?password= are also accepted.
  const paramHost = out.params.get('host');
  if (paramHost) {
    if (paramHost.startsWith('/')) out.socket = paramHost;
    else out.host = paramHost;
  }
  const paramPort = out.params.get('port');
  if (paramPort) {
    const port = Number(paramPort);
    if (!Number.isInteger(port) || port < 1 || port > 65535) return { ok: false, problem: `the port "${paramPort}" is not a port number` };
    out.port = port;
  }
  if (out.params.get('user')) out.user = out.params.get('user');
  if (out.params.has('password')) out.password = out.params.get('password');
  return { ok: true, value: out };
}

/** "host", "host:3306", "[::1]:5432", "localhost:/run/mysqld/mysqld.sock" (PEAR's socket-as-port form). */
export function splitHostPort(spec: string): ParseResult<{ host?: string; port?: number; socket?: string }> {
  if (spec.startsWith('[')) {
    const close = spec.indexOf(']');
    if (close < 0) return { ok: false, problem: `the host "${spec}" has an unclosed "["` };
    const host = spec.slice(1, close);
    const after = spec.slice(close + 1);
    if (!after) return { ok: true, value: { host } };
    if (!after.startsWith(':')) return { ok: false, problem: `unexpected "${after}" after the host "${host}"` };
    return withPort(host, after.slice(1));
  }
  const colon = spec.indexOf(':');
  if (colon < 0) return { ok: true, value: spec ? { host: spec } : {} };
  return withPort(spec.slice(0, colon), spec.slice(colon + 1));
}

function withPort(host: string, portText: string): ParseResult<{ host?: string; port?: number; socket?: string }> {
  const value: { host?: string; port?: number; socket?: string } = host ? { host } : {};
  if (portText.startsWith('/')) return { ok: true, value: { ...value, socket: portText } };
  if (portText === '') return { ok: true, value };
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) return { ok: false, problem: `the port "${portText}" is not a port number` };
  return { ok: true, value: { ...value, port } };
}

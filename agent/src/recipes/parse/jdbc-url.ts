import { splitHostPort, type ParseResult } from './db-url.js';

/**
 * JDBC URLs for the databases Liferay runs on that we can dump:
 * - jdbc:mysql://host:3306/lportal?useUnicode=true&… (also jdbc:mysql:loadbalance://, :replication://)
 * - jdbc:mariadb://host/lportal (also jdbc:mariadb:sequential://, :failover://, …)
 * - jdbc:postgresql://host:5432/lportal?…, jdbc:postgresql:lportal (local, default port)
 * Several hosts (failover): the first is used, the rest are returned. User and password may also come from
 * the URL's parameters (user=, password=) or its userinfo (Connector/J accepts user:pass@host).
 */

export interface JdbcDatabase {
  kind: 'mysql' | 'postgres';
  host: string;
  port?: number;
  /** A Unix socket (MariaDB Connector/J's localSocket=). */
  socket?: string;
  database: string;
  user?: string;
  password?: string;
  /** Failover hosts after the first, as written. */
  otherHosts: string[];
}

export type JdbcParse = ParseResult<JdbcDatabase> | { ok: false; unsupported: string; problem: string };

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export function parseJdbcUrl(url: string): JdbcParse {
  const m = /^jdbc:([A-Za-z0-9]+)(?::([A-Za-z0-9+]+))?:(.*)$/s.exec(url.trim());
  if (!m) return { ok: false, problem: 'not a JDBC URL (jdbc:subprotocol://host/database)' };
  const subprotocol = m[1]!.toLowerCase();
  const rest = m[3]!;
  const kind = subprotocol === 'mysql' || subprotocol === 'mariadb' ? 'mysql' : subprotocol === 'postgresql' ? 'postgres' : null;
  if (!kind) {
    return { ok: false, unsupported: subprotocol, problem: `the ${subprotocol} database is not one this recipe can dump (MySQL/MariaDB or PostgreSQL)` };
  }
  // jdbc:postgresql:lportal / jdbc:postgresql:/ — no host: the local server on the default port.
  if (!rest.startsWith('//')) {
    if (kind !== 'postgres') return { ok: false, problem: 'expected "//" and a host after the subprotocol' };
    const [db, query] = splitQuery(rest.replace(/^\//, ''));
    return finish({ kind, host: 'localhost', database: decode(db), otherHosts: [] }, query);
  }
  const afterSlashes = rest.slice(2);
  const slash = indexOfPathSlash(afterSlashes);
  const authority = slash >= 0 ? afterSlashes.slice(0, slash) : afterSlashes.replace(/\?.*$/s, '');
  const pathAndQuery = slash >= 0 ? afterSlashes.slice(slash + 1) : afterSlashes.includes('?') ? afterSlashes.slice(afterSlashes.indexOf('?')) : '';
  let user: string | undefined;
  let password: string | undefined;
  let hostList = authority;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    hostList = authority.slice(at + 1);
    const colon = userinfo.indexOf(':');
    user = decode(colon >= 0 ? userinfo.slice(0, colon) : userinfo) || undefined;
    if (colon >= 0) password = decode(userinfo.slice(colon + 1));
  }
  const hosts = splitHosts(hostList);
  if (hosts.length === 0) return { ok: false, problem: 'no host in the URL' };
  const first = parseHost(hosts[0]!);
  if (!first.ok) return first;
  const [db, query] = splitQuery(pathAndQuery);
  const database = decode(db);
  if (!database) return { ok: false, problem: 'no database name in the URL (…/database)' };
  const result: JdbcDatabase = { kind, host: first.value.host ?? 'localhost', database, otherHosts: hosts.slice(1) };
  if (first.value.port !== undefined) result.port = first.value.port;
  if (user !== undefined) result.user = user;
  if (password !== undefined) result.password = password;
  return finish(result, query);
}

function finish(db: JdbcDatabase, query: string): ParseResult<JdbcDatabase> {
  for (const pair of query.split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const key = decode(eq >= 0 ? pair.slice(0, eq) : pair);
    const value = decode(eq >= 0 ? pair.slice(eq + 1) : '');
    if (key === 'user') db.user = value;
    else if (key === 'password') db.password = value;
    else if (key === 'localSocket' && value) db.socket = value;
  }
  return { ok: true, value: db };
}

/** The "/" that starts the database path: not one inside "address=(…)" or "[…]". */
function indexOfPathSlash(s: string): number {
  let depth = 0;
  for (let k = 0; k < s.length; k++) {
    const ch = s[k];
    if (ch === '(' || ch === '[') depth++;
    else if (ch === ')' || ch === ']') depth--;
    else if (ch === '/' && depth === 0) return k;
    else if (ch === '?' && depth === 0) return -1;
  }
  return -1;
}

function splitQuery(s: string): [string, string] {
  const q = s.indexOf('?');
  return q >= 0 ? [s.slice(0, q), s.slice(q + 1)] : [s, ''];
}

function splitHosts(list: string): string[] {
  const hosts: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of list) {
    if (ch === '(' || ch === '[') depth++;
    if (ch === ')' || ch === ']') depth--;
    if (ch === ',' && depth === 0) {
      if (current.trim()) hosts.push(current.trim());
      current = '';
      continue;
    }
    current += ch;
  }
  if (current.trim()) hosts.push(current.trim());
  return hosts;
}

/** "host:3306", "[::1]:3306", or Connector/J's "address=(host=db)(port=3306)" / "(host=db,port=3306)". */
function parseHost(spec: string): ParseResult<{ host?: string; port?: number }> {
  if (/^address=|^\(/.test(spec)) {
    const host = /host=([^,)]+)/.exec(spec)?.[1];
    const port = /port=(\d+)/.exec(spec)?.[1];
    const value: { host?: string; port?: number } = {};
    if (host) value.host = host;
    if (port) value.port = Number(port);
    return { ok: true, value };
  }
  const hp = splitHostPort(spec);
  if (!hp.ok) return hp;
  const value: { host?: string; port?: number } = {};
  if (hp.value.host) value.host = hp.value.host;
  if (hp.value.port !== undefined) value.port = hp.value.port;
  return { ok: true, value };
}

import { splitHostPort, type ParseResult } from './db-url.js';

/**
 * A go-sql-driver/mysql DSN, as Pydio Cells stores it in pydio.json:
 * `[user[:password]@][protocol[(address)]]/dbname[?param=value&…]`, e.g.
 * `pydio:secret@tcp(localhost:3306)/cells?parseTime=true`. As in the driver, the database is after the LAST
 * "/", the user info before the LAST "@" before it, and the password is taken as written (not URL-decoded).
 */

export interface GoMysqlDsn {
  user?: string;
  password?: string;
  host: string;
  port: number;
  socket?: string;
  database: string;
}

export function parseGoMysqlDsn(dsn: string): ParseResult<GoMysqlDsn> {
  const slash = dsn.lastIndexOf('/');
  if (slash < 0) return { ok: false, problem: 'not a MySQL DSN of the form user:password@tcp(host:port)/database' };
  const before = dsn.slice(0, slash);
  const after = dsn.slice(slash + 1);
  const q = after.indexOf('?');
  let database = q >= 0 ? after.slice(0, q) : after;
  try {
    database = decodeURIComponent(database);
  } catch {
    // kept as written
  }
  if (!database) return { ok: false, problem: 'the DSN names no database (…/database)' };
  const at = before.lastIndexOf('@');
  const userinfo = at >= 0 ? before.slice(0, at) : '';
  const netaddr = at >= 0 ? before.slice(at + 1) : before;
  const out: GoMysqlDsn = { host: '127.0.0.1', port: 3306, database };
  if (at >= 0) {
    const colon = userinfo.indexOf(':');
    const user = colon >= 0 ? userinfo.slice(0, colon) : userinfo;
    if (user) out.user = user;
    if (colon >= 0) out.password = userinfo.slice(colon + 1);
  }
  if (netaddr) {
    const m = /^([a-z0-9]+)(?:\((.*)\))?$/s.exec(netaddr);
    if (!m) return { ok: false, problem: `cannot read the connection part "${netaddr}" (expected tcp(host:port) or unix(/path))` };
    const protocol = m[1]!;
    const address = m[2] ?? '';
    if (protocol === 'unix') {
      out.socket = address || '/tmp/mysql.sock';
      out.host = 'localhost';
    } else if (protocol === 'tcp' || protocol === 'tcp6' || protocol === 'tcp4') {
      if (address) {
        const hp = splitHostPort(address);
        if (!hp.ok) return hp;
        out.host = hp.value.host ?? '127.0.0.1';
        if (hp.value.port !== undefined) out.port = hp.value.port;
      }
    } else {
      return { ok: false, problem: `unknown connection protocol "${protocol}"` };
    }
  }
  return { ok: true, value: out };
}

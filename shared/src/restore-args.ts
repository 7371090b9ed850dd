import { LifeboatError } from './errors.js';

/**
 * What both restore commands (`lifeboat restore` through the server, `lifeboat-agent restore-from-store`
 * without one) take on their command line, parsed one way.
 */
export interface DatabaseLocation {
  host: string;
  port: number;
  user: string;
  database: string;
}

const DEFAULTS = { postgres: { port: 5432, user: 'postgres' }, mysql: { port: 3306, user: 'root' } } as const;

/** postgres://user@host:port/db or mysql://…; a password in the URL is refused (it would sit in argv and logs). */
export function parseDatabaseUrl(kind: 'postgres' | 'mysql', url: string): DatabaseLocation {
  const flag = `--to-${kind}`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new LifeboatError('bad_request', `${flag}: not a URL: "${url}"`);
  }
  const scheme = kind === 'postgres' ? /^postgres(ql)?:$/ : /^(mysql|mariadb):$/;
  if (!scheme.test(parsed.protocol)) throw new LifeboatError('bad_request', `${flag}: expected ${kind}://user@host:port/database, got "${parsed.protocol}//…"`);
  if (parsed.password) throw new LifeboatError('bad_request', `${flag}: leave the password out of the URL; put it in a file and pass --password-file`);
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  if (!database) throw new LifeboatError('bad_request', `${flag}: the URL names no database (…/DATABASE)`);
  return {
    host: parsed.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: parsed.port ? Number(parsed.port) : DEFAULTS[kind].port,
    user: decodeURIComponent(parsed.username) || DEFAULTS[kind].user,
    database,
  };
}

/** "--artifact N": an artifact index from 0. */
export function parseArtifactIndex(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new LifeboatError('bad_request', `--artifact takes an index from 0, got "${value}"`);
  return n;
}

/** "--rewrite-host OLD=NEW". */
export function parseHostRewrite(value: string): { from: string; to: string } {
  const eq = value.indexOf('=');
  if (eq <= 0 || eq === value.length - 1) throw new LifeboatError('bad_request', `--rewrite-host takes OLD=NEW, got "${value}"`);
  return { from: value.slice(0, eq), to: value.slice(eq + 1) };
}

import { describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from './parse/db-url.js';
import { DotenvSyntaxError, parseDotenv } from './parse/dotenv.js';
import { parseGoMysqlDsn } from './parse/go-mysql-dsn.js';
import { parseJavaProperties, parseJavaPropertiesList, PropertiesSyntaxError } from './parse/java-properties.js';
import { parseJdbcUrl } from './parse/jdbc-url.js';
import { JsonSyntaxError, locateJsonStrings } from './parse/json-locate.js';
import { OsgiConfigSyntaxError, parseOsgiConfig } from './parse/osgi-config.js';
import { parsePhpSettings, PhpSyntaxError } from './parse/php-define.js';

describe('PHP settings (civicrm.settings.php)', () => {
  it('reads define() with single or double quotes and spaces, and ignores commented-out defines', () => {
    const php = `<?php
// define('CIVICRM_DSN', 'mysql://commented:out@x/y');
# define('CIVICRM_DSN', 'mysql://hash:comment@x/y');
/* define('CIVICRM_DSN', 'mysql://block:comment@x/y'); */
if (!defined('CIVICRM_DSN')) {
  if (CIVICRM_UF === 'UnitTests' && isset($GLOBALS['_CV']['TEST_DB_DSN'])) {
    define('CIVICRM_DSN', $GLOBALS['_CV']['TEST_DB_DSN']);
  }
  else {
    define( "CIVICRM_DSN" ,   "mysql://u:p\\$w@localhost/civi?new_link=true" );
  }
}
DEFINE('CIVICRM_DOMAIN_ID', 1);
define('CIVICRM_SITE_KEY', 'it\\'s a \\\\ key');
`;
    const s = parsePhpSettings(php);
    expect(s.defines.get('CIVICRM_DSN')).toEqual([
      { value: null, line: 7 },
      { value: 'mysql://u:p$w@localhost/civi?new_link=true', line: 10 },
    ]);
    expect(s.defines.get('CIVICRM_DOMAIN_ID')?.[0]?.value).toBe('1');
    expect(s.defines.get('CIVICRM_SITE_KEY')?.[0]?.value).toBe("it's a \\ key");
  });

  it('reads $civicrm_setting and $civicrm_paths assignments; computed values are null, never guessed', () => {
    const s = parsePhpSettings(`<?php
global $civicrm_root, $civicrm_setting;
$civicrm_root = '/var/www/html/sites/all/modules/civicrm/';
$civicrm_setting['domain']['customTemplateDir'] = '/srv/civi-templates';
$civicrm_setting['Directory Preferences']["customFileUploadDir"] = "[civicrm.files]/custom/";
$civicrm_paths['civicrm.files']['path'] = __DIR__ . '/files/civicrm';
if ($civicrm_setting['domain']['x'] == 'y') {}
`);
    expect(s.assignments).toEqual([
      { variable: '$civicrm_root', keys: [], value: '/var/www/html/sites/all/modules/civicrm/', line: 3 },
      { variable: '$civicrm_setting', keys: ['domain', 'customTemplateDir'], value: '/srv/civi-templates', line: 4 },
      { variable: '$civicrm_setting', keys: ['Directory Preferences', 'customFileUploadDir'], value: '[civicrm.files]/custom/', line: 5 },
      { variable: '$civicrm_paths', keys: ['civicrm.files', 'path'], value: null, line: 6 },
    ]);
  });

  it('an interpolating double-quoted string is not a plain value', () => {
    const s = parsePhpSettings(`<?php define('CIVICRM_DSN', "mysql://u:$pass@h/db");`);
    expect(s.defines.get('CIVICRM_DSN')?.[0]?.value).toBeNull();
  });

  it('an unterminated string or comment fails with the line where it starts', () => {
    expect(() => parsePhpSettings(`<?php\n\ndefine('CIVICRM_DSN', 'mysql://u:p@h/db);\n`)).toThrow(PhpSyntaxError);
    try {
      parsePhpSettings(`<?php\n\ndefine('CIVICRM_DSN', 'mysql://u:p@h/db);\n`);
    } catch (err) {
      expect((err as PhpSyntaxError).line).toBe(3);
    }
    try {
      parsePhpSettings(`<?php\n/* open\n\n`);
    } catch (err) {
      expect((err as PhpSyntaxError).line).toBe(2);
    }
  });
});

describe('database URLs', () => {
  it('reads a CiviCRM DSN with a URL-encoded password, a port and options', () => {
    const r = parseDatabaseUrl('mysql://civi:S3cr%40t%3Ap%27w%2Fd@db.internal:3307/civicrm?new_link=true&ssl=1');
    expect(r).toMatchObject({ ok: true, value: { scheme: 'mysql', user: 'civi', password: "S3cr@t:p'w/d", host: 'db.internal', port: 3307, database: 'civicrm' } });
  });

  it('takes the userinfo up to the LAST "@", as PEAR does, and reads unix() sockets', () => {
    expect(parseDatabaseUrl('mysql://u:p@ss@localhost/db')).toMatchObject({ ok: true, value: { user: 'u', password: 'p@ss', host: 'localhost', database: 'db' } });
    expect(parseDatabaseUrl('mysql://u:p@unix(/run/mysqld/mysqld.sock)/db?new_link=true')).toMatchObject({ ok: true, value: { socket: '/run/mysqld/mysqld.sock', database: 'db' } });
    expect(parseDatabaseUrl('mysql://u:p@localhost:/var/run/mysqld.sock/db')).toMatchObject({ ok: true, value: { host: 'localhost', socket: '/var/run/mysqld.sock' } });
  });

  it('reads a Rails DATABASE_URL with a socket directory parameter', () => {
    expect(parseDatabaseUrl('postgresql://chatwoot@/chatwoot_production?host=/var/run/postgresql')).toMatchObject({
      ok: true,
      value: { scheme: 'postgresql', user: 'chatwoot', socket: '/var/run/postgresql', database: 'chatwoot_production' },
    });
  });

  it('refuses a bad port', () => {
    expect(parseDatabaseUrl('mysql://u:p@h:99999/db')).toMatchObject({ ok: false });
    expect(parseDatabaseUrl('not a url')).toMatchObject({ ok: false });
  });
});

describe('.env (dotenv)', () => {
  it('reads quotes, export, comments, expansion and multi-line values as Ruby dotenv does', () => {
    const env = parseDotenv(`# Chatwoot
export SECRET_KEY_BASE=abc
POSTGRES_HOST=db.internal   # comment
POSTGRES_PASSWORD='li#t$ral'
REDIS_PASSWORD="a\\"b\\nc"
FRONTEND_URL=https://\${POSTGRES_HOST}/x
EMPTY=
MULTI="line1
line2"
AFTER=1
`);
    expect(env.get('SECRET_KEY_BASE')).toEqual({ value: 'abc', line: 2 });
    expect(env.get('POSTGRES_HOST')?.value).toBe('db.internal');
    expect(env.get('POSTGRES_PASSWORD')?.value).toBe('li#t$ral');
    expect(env.get('REDIS_PASSWORD')?.value).toBe('a"b\nc');
    expect(env.get('FRONTEND_URL')?.value).toBe('https://db.internal/x');
    expect(env.get('EMPTY')?.value).toBe('');
    expect(env.get('MULTI')).toEqual({ value: 'line1\nline2', line: 8 });
    expect(env.get('AFTER')).toEqual({ value: '1', line: 10 });
  });

  it('a line that is not KEY=value, or an unclosed quote, fails with its line', () => {
    expect(() => parseDotenv('A=1\nthis is not an assignment\n')).toThrow(DotenvSyntaxError);
    try {
      parseDotenv('A=1\n\nB="open\n');
    } catch (err) {
      expect((err as DotenvSyntaxError).line).toBe(3);
    }
  });
});

describe('.properties', () => {
  it('reads continuations, separators and escapes as java.util.Properties does; the last one wins', () => {
    const text = `# comment
! also a comment
jdbc.default.url=jdbc:mysql://localhost/lportal?useUnicode=true&\\
    characterEncoding=UTF-8
jdbc.default.username : lportal
jdbc.default.password   p\\u00e4ss\\=w\\:rd\\\\
key\\ with\\ spaces=v
jdbc.default.username=override
`;
    const props = parseJavaProperties(text);
    expect(props.get('jdbc.default.url')).toEqual({ value: 'jdbc:mysql://localhost/lportal?useUnicode=true&characterEncoding=UTF-8', line: 3 });
    expect(props.get('jdbc.default.password')?.value).toBe('päss=w:rd\\');
    expect(props.get('key with spaces')?.value).toBe('v');
    expect(props.get('jdbc.default.username')).toEqual({ value: 'override', line: 8 });
    expect(parseJavaPropertiesList('a=1\na=2\n').map((e) => e.value)).toEqual(['1', '2']);
  });

  it('a malformed \\u escape fails with its line', () => {
    try {
      parseJavaProperties('a=1\nb=\\u12G4\n');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(PropertiesSyntaxError);
      expect((err as PropertiesSyntaxError).line).toBe(2);
    }
  });
});

describe('JDBC URLs', () => {
  it('reads MySQL, MariaDB and PostgreSQL URLs', () => {
    expect(parseJdbcUrl('jdbc:mysql://db1:3307/lportal?characterEncoding=UTF-8&useUnicode=true')).toEqual({
      ok: true,
      value: { kind: 'mysql', host: 'db1', port: 3307, database: 'lportal', otherHosts: [] },
    });
    expect(parseJdbcUrl('jdbc:mariadb:sequential://db1,db2:3306/lportal')).toMatchObject({ ok: true, value: { kind: 'mysql', host: 'db1', otherHosts: ['db2:3306'] } });
    expect(parseJdbcUrl('jdbc:postgresql://pg.internal:5433/lportal?user=lr&password=s%26cret')).toMatchObject({
      ok: true,
      value: { kind: 'postgres', host: 'pg.internal', port: 5433, database: 'lportal', user: 'lr', password: 's&cret' },
    });
    expect(parseJdbcUrl('jdbc:postgresql:lportal')).toMatchObject({ ok: true, value: { kind: 'postgres', host: 'localhost', database: 'lportal' } });
    expect(parseJdbcUrl('jdbc:mysql://[::1]:3306/lportal')).toMatchObject({ ok: true, value: { host: '::1', port: 3306 } });
    expect(parseJdbcUrl('jdbc:mysql://address=(host=db9)(port=3310)/lportal')).toMatchObject({ ok: true, value: { host: 'db9', port: 3310 } });
  });

  it('says which databases it cannot dump', () => {
    expect(parseJdbcUrl('jdbc:oracle:thin:@db:1521:xe')).toMatchObject({ ok: false, unsupported: 'oracle' });
    expect(parseJdbcUrl('jdbc:mysql://db1/')).toMatchObject({ ok: false });
  });
});

describe('OSGi .config files', () => {
  it('reads typed values and arrays continued over lines', () => {
    const c = parseOsgiConfig(
      `# remote search
productionModeEnabled=B"true"
networkHostAddresses=[ \\
  "http://es1:9200", \\
  "http://es2:9200" \\
]
username="elastic"
password="p\\"w"
port=I"9200"
`,
      'x.config',
    );
    expect(c.get('productionModeEnabled')).toEqual({ value: 'true', line: 2 });
    expect(c.get('networkHostAddresses')).toEqual({ value: ['http://es1:9200', 'http://es2:9200'], line: 3 });
    expect(c.get('username')?.value).toBe('elastic');
    expect(c.get('password')?.value).toBe('p"w');
    expect(c.get('port')?.value).toBe('9200');
  });

  it('reads .cfg files as properties, and fails on a broken .config with the line', () => {
    expect(parseOsgiConfig('transportAddresses=es1:9300,es2:9300\n', 'x.cfg').get('transportAddresses')?.value).toEqual(['es1:9300', 'es2:9300']);
    try {
      parseOsgiConfig('a="ok"\nb=["open"\n', 'x.config');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(OsgiConfigSyntaxError);
      expect((err as OsgiConfigSyntaxError).line).toBe(2);
    }
  });
});

describe('Go MySQL DSNs (pydio.json)', () => {
  it('reads user, password (as written), tcp address and database', () => {
    expect(parseGoMysqlDsn('pydio:p@ss/w:rd@tcp(db.internal:3307)/cells?parseTime=true')).toEqual({
      ok: true,
      value: { user: 'pydio', password: 'p@ss/w:rd', host: 'db.internal', port: 3307, database: 'cells' },
    });
    expect(parseGoMysqlDsn('root@unix(/run/mysqld/mysqld.sock)/cells')).toMatchObject({ ok: true, value: { user: 'root', socket: '/run/mysqld/mysqld.sock', database: 'cells' } });
    expect(parseGoMysqlDsn('u:p@/cells')).toMatchObject({ ok: true, value: { host: '127.0.0.1', port: 3306 } });
    expect(parseGoMysqlDsn('3c6b7a0e-0000-4000-8000-000000000000')).toMatchObject({ ok: false });
  });
});

describe('JSON string locations', () => {
  it('lists string values with their paths and offsets, and fails with the line', () => {
    const text = '{\n  "a": {"b": ["x", 1, "y"]},\n  "c": "z"\n}';
    const found = locateJsonStrings(text);
    expect(found.map((f) => [f.path, f.value, text.slice(f.start, f.end)])).toEqual([
      [['a', 'b', 0], 'x', '"x"'],
      [['a', 'b', 2], 'y', '"y"'],
      [['c'], 'z', '"z"'],
    ]);
    try {
      locateJsonStrings('{\n  "a": 1,\n  "b": \n}');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(JsonSyntaxError);
      expect((err as JsonSyntaxError).line).toBe(4);
    }
  });
});

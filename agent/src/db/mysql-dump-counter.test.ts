import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { LifeboatError } from '@lifeboat/shared';
import { DatabaseFilter, DumpCounter, DumpScanner, type DatabaseFilterOptions, type DumpContents, type DumpStatement } from './mysql-dump-counter.js';

/** The head and tail mariadb-dump 10.11 writes, sandbox line first. */
const HEADER = [
  '/*M!999999\\- enable the sandbox mode */ ',
  '-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)',
  '--',
  '-- Host: 127.0.0.1    Database: shop',
  '-- ------------------------------------------------------',
  '-- Server version\t10.11.19-MariaDB-0+deb12u1',
  '',
  '/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;',
  '/*!40101 SET NAMES utf8mb4 */;',
  "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;",
  '',
].join('\n');
const FOOTER = ['/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;', '/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;', '', '-- Dump completed', ''].join('\n');

function table(name: string, rows: string[]): string {
  const quoted = '`' + name.replaceAll('`', '``') + '`';
  const lines = [
    '--',
    `-- Table structure for table ${quoted}`,
    '--',
    '',
    `DROP TABLE IF EXISTS ${quoted};`,
    '/*!40101 SET @saved_cs_client     = @@character_set_client */;',
    `CREATE TABLE ${quoted} (`,
    '  `id` int(11) NOT NULL,',
    "  `s` varchar(100) DEFAULT NULL COMMENT 'a comment; with (parens)',",
    '  PRIMARY KEY (`id`)',
    ') ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;',
    '/*!40101 SET character_set_client = @saved_cs_client */;',
    '',
    `LOCK TABLES ${quoted} WRITE;`,
    `/*!40000 ALTER TABLE ${quoted} DISABLE KEYS */;`,
  ];
  if (rows.length > 0) lines.push(`INSERT INTO ${quoted} VALUES\n${rows.join(',\n')};`);
  lines.push(`/*!40000 ALTER TABLE ${quoted} ENABLE KEYS */;`, 'UNLOCK TABLES;', '');
  return lines.join('\n');
}

/** Trigger, event and routine sections as mariadb-dump writes them: bodies with INSERTs under DELIMITER ;; */
const ROUTINES = [
  'ALTER DATABASE `shop` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;',
  'DELIMITER ;;',
  "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER trg AFTER INSERT ON empty_t FOR EACH ROW BEGIN INSERT INTO audit VALUES ('x'),('y'); INSERT INTO `audit` VALUES (1); END ",
  '*/;;',
  'DELIMITER ;',
  'ALTER DATABASE `shop` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci ;',
  'DELIMITER ;;',
  "/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`localhost`*/ /*!50106 EVENT `ev` ON SCHEDULE EVERY 1 DAY DO INSERT INTO audit VALUES ('e') ",
  '*/ ;;',
  'CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()',
  "BEGIN INSERT INTO audit VALUES ('p1'),('p2'); SELECT ';;' ; END",
  ';;',
  'DELIMITER ;',
  '',
  '--',
  '-- Temporary table structure for view `v`',
  '--',
  '/*!50001 CREATE TABLE `v` (',
  '  `id` tinyint NOT NULL',
  ') ENGINE=MyISAM */;',
  '/*!50001 CREATE VIEW `v2` AS SELECT',
  ' NULL AS `id` */;',
  '',
].join('\n');

/** Values that break a naive "split on ),(" or "count the commas" parser. */
const TRICKY_ROWS = [
  "(1,'),(')",
  "(2,'\\'),(\\'')",
  "(3,'it''s ''),('' here')",
  "(4,'back\\\\slash\\\\')",
  '(5,"double \\" ),( quoted")',
  '(6,0x28272928)',
  '(7,NULL)',
  "(8,'line\\nbreak -- not a comment # nor this /* nor this */ ; nor this')",
  "(9,'ünï 😀 表')",
  "(10,b'0101')",
  "(11,'(((')",
  "(12,')))')",
  "(13,'raw\nnewline')",
  "(14,'')",
  '(15,-1)',
  '(16,-1.5e-10)',
  "(17,'`backtick`')",
];

const SHOP = HEADER + table('we`ird', TRICKY_ROWS) + table('with space', ["(1,'a')"]) + table('empty_t', []) + table('ünïcødé 表', ["(1,'x')", "(2,'y')"]) + table('audit', []) + ROUTINES + FOOTER;

const SHOP_TABLES = [
  { name: 'we`ird', rows: TRICKY_ROWS.length },
  { name: 'with space', rows: 1 },
  { name: 'empty_t', rows: 0 },
  { name: 'ünïcødé 表', rows: 2 },
  { name: 'audit', rows: 0 },
];

/** A deterministic generator, so a failing split can be reproduced. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** The bytes cut into pieces: every byte alone, fixed sizes, or random sizes. */
function piecesOf(bytes: Buffer, how: 'bytes' | number | { seed: number }): Buffer[] {
  const pieces: Buffer[] = [];
  const next = typeof how === 'object' ? random(how.seed) : null;
  for (let i = 0; i < bytes.length; ) {
    const size = how === 'bytes' ? 1 : typeof how === 'number' ? how : 1 + Math.floor(next!() * 40);
    pieces.push(bytes.subarray(i, i + size));
    i += size;
  }
  return pieces;
}

async function count(dump: string | Buffer, options: { database?: string } = {}, how: Parameters<typeof piecesOf>[1] = 65536): Promise<DumpContents> {
  const bytes = typeof dump === 'string' ? Buffer.from(dump, 'utf8') : dump;
  const counter = new DumpCounter(options);
  const passed: Buffer[] = [];
  counter.on('data', (piece: Buffer) => passed.push(piece));
  await pipeline(Readable.from(piecesOf(bytes, how)), counter);
  // A pass-through: the bytes come out as they went in.
  expect(Buffer.concat(passed).equals(bytes)).toBe(true);
  return counter.contents();
}

async function filter(dump: string, options: DatabaseFilterOptions, how: Parameters<typeof piecesOf>[1] = 65536): Promise<string> {
  const filtered = new DatabaseFilter(options);
  const out: Buffer[] = [];
  filtered.on('data', (piece: Buffer) => out.push(piece));
  await pipeline(Readable.from(piecesOf(Buffer.from(dump, 'utf8'), how)), filtered);
  return Buffer.concat(out).toString('utf8');
}

function statements(dump: string): DumpStatement[] {
  const seen: DumpStatement[] = [];
  const scanner = new DumpScanner({ statement: (s) => seen.push(s) });
  scanner.write(Buffer.from(dump, 'utf8'));
  expect(scanner.end()).toBeNull();
  return seen;
}

describe('DumpCounter', () => {
  it('counts the rows of every table in a one-database dump, including tables without rows', async () => {
    const contents = await count(SHOP, { database: 'shop' });
    expect(contents.problem).toBeNull();
    expect(contents.databases).toEqual([{ name: 'shop', tables: SHOP_TABLES }]);
  });

  it('gives the same counts however the stream is cut into pieces', async () => {
    const expected = [{ name: 'shop', tables: SHOP_TABLES }];
    for (const how of ['bytes', 2, 3, 7, 64, { seed: 1 }, { seed: 2 }, { seed: 3 }] as const) {
      const contents = await count(SHOP, { database: 'shop' }, how);
      expect(contents.problem, `pieces: ${JSON.stringify(how)}`).toBeNull();
      expect(contents.databases, `pieces: ${JSON.stringify(how)}`).toEqual(expected);
    }
  });

  it('does not count INSERTs inside trigger, event and procedure bodies (DELIMITER ;;) or view stand-ins as tables', async () => {
    const contents = await count(HEADER + table('audit', ["(1,'a')"]) + ROUTINES + FOOTER, { database: 'shop' });
    expect(contents.databases[0]!.tables).toEqual([{ name: 'audit', rows: 1 }]);
  });

  it('counts several databases by their USE statements (a --databases dump)', async () => {
    const dump =
      HEADER +
      '--\n-- Current Database: `shop`\n--\n\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n\nUSE `shop`;\n' +
      table('orders', ["(1,'a')", "(2,'b')"]) +
      'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `c``rm` /*!40100 DEFAULT CHARACTER SET latin1 */;\n\nUSE `c``rm`;\n' +
      table('orders', ["(1,'a')"]) +
      table('contacts', []) +
      '\nUSE `shop`;\n/*!50001 DROP VIEW IF EXISTS `v`*/;\n' +
      FOOTER;
    const contents = await count(dump, {}, 'bytes');
    expect(contents.problem).toBeNull();
    expect(contents.databases).toEqual([
      { name: 'shop', tables: [{ name: 'orders', rows: 2 }] },
      { name: 'c`rm', tables: [{ name: 'orders', rows: 1 }, { name: 'contacts', rows: 0 }] },
    ]);
  });

  it('counts binary strings written without --hex-blob (escaped NUL, quotes, raw bytes such as "(")', async () => {
    const binary = Buffer.concat([
      Buffer.from(HEADER + table('bin', []).replace('UNLOCK TABLES;', '') + 'INSERT INTO `bin` VALUES\n(1,\'', 'utf8'),
      Buffer.from([0x5c, 0x30, 0x01, 0x02, 0x5c, 0x27, 0x28, 0x29, 0x5c, 0x22, 0x5c, 0x5c, 0x5c, 0x6e, 0x5c, 0x5a, 0x3b, 0xff, 0xfe, 0x28]),
      Buffer.from("'),\n(2,0x00FF),\n(3,'');\nUNLOCK TABLES;\n" + FOOTER, 'utf8'),
    ]);
    for (const how of ['bytes', { seed: 9 }] as const) {
      const contents = await count(binary, { database: 'shop' }, how);
      expect(contents.problem).toBeNull();
      expect(contents.databases[0]!.tables).toEqual([{ name: 'bin', rows: 3 }]);
    }
  });

  it('reads comments the way the client does: "-- " and "#" to the end of the line, /* */ blocks', async () => {
    const dump =
      HEADER +
      table('t', []) +
      "# a hash comment with INSERT INTO `t` VALUES (1);\n" +
      '-- a dash comment; INSERT INTO `t` VALUES (2);\n' +
      '/* a block comment INSERT INTO `t` VALUES (3); */\n' +
      "INSERT /* inline */ INTO `t` VALUES (4,'a'), -- a comment after a row (5)\n(6,'b') # another (7)\n;\n" +
      FOOTER;
    const contents = await count(dump, { database: 'shop' }, 'bytes');
    expect(contents.databases[0]!.tables).toEqual([{ name: 't', rows: 2 }]);
  });

  it('recognises INSERT forms with a column list, IGNORE, REPLACE and no space before the rows', async () => {
    const dump =
      HEADER +
      'INSERT IGNORE INTO `a` (`x`, `y(z)`) VALUES (1,2),(3,4);\n' +
      'REPLACE INTO `b` VALUES(1);\n' +
      'insert into c values (1),(2),(3);\n' +
      FOOTER;
    const contents = await count(dump, { database: 'shop' });
    expect(contents.databases[0]!.tables).toEqual([
      { name: 'a', rows: 2 },
      { name: 'b', rows: 1 },
      { name: 'c', rows: 3 },
    ]);
  });

  it('finds a truncated dump wherever it was cut', async () => {
    const full = Buffer.from(SHOP, 'utf8');
    const end = full.lastIndexOf('-- Dump completed') + '-- Dump completed'.length;
    for (let cut = 0; cut < end; cut += cut < 200 ? 1 : 37) {
      const contents = await count(full.subarray(0, cut), { database: 'shop' });
      expect(contents.problem, `cut at byte ${cut}`).not.toBeNull();
    }
    expect((await count(full.subarray(0, end), { database: 'shop' })).problem).toBeNull();
  });

  it('says what is wrong: empty, cut inside a string, no trailer, a table before any USE', async () => {
    expect((await count('')).problem).toBe('the dump is empty');
    expect((await count(HEADER + "INSERT INTO `t` VALUES (1,'abc", { database: 'd' })).problem).toMatch(/inside a quoted string/);
    expect((await count(HEADER + table('t', ['(1)']), { database: 'd' })).problem).toMatch(/does not end with "-- Dump completed"/);
    expect((await count(HEADER + table('t', ['(1)']) + FOOTER)).problem).toMatch(/before any USE statement/);
  });

  it('keeps the sandbox-mode first line', async () => {
    const bytes = Buffer.from(SHOP, 'utf8');
    const counter = new DumpCounter({ database: 'shop' });
    const out: Buffer[] = [];
    counter.on('data', (b: Buffer) => out.push(b));
    await pipeline(Readable.from([bytes]), counter);
    expect(Buffer.concat(out).toString('utf8').split('\n')[0]).toBe('/*M!999999\\- enable the sandbox mode */ ');
  });

  it('streams a large extended INSERT without holding it', async () => {
    const row = "(1,'" + 'x'.repeat(1000) + "'),";
    const rows = 20_000;
    const parts = [Buffer.from(HEADER + 'INSERT INTO `big` VALUES\n'), ...Array.from({ length: rows - 1 }, () => Buffer.from(row)), Buffer.from("(2,'y');\n" + FOOTER)];
    const counter = new DumpCounter({ database: 'd' });
    counter.resume();
    const before = process.memoryUsage().heapUsed;
    await pipeline(Readable.from(parts), counter);
    expect(counter.contents().databases[0]!.tables).toEqual([{ name: 'big', rows }]);
    // 20 MB went through; the counter keeps nothing of it.
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(15 * 1024 * 1024);
  });
});

describe('DumpScanner', () => {
  it('classifies the statements that name databases and tables', () => {
    const seen = statements(
      'USE `a``b`;\nuse plain;\nCREATE DATABASE IF NOT EXISTS `x`;\nCREATE SCHEMA y;\nALTER DATABASE `z` CHARACTER SET utf8mb4 ;\n' +
        'ALTER DATABASE CHARACTER SET latin1;\nDROP DATABASE IF EXISTS `w`;\nCREATE TABLE `db`.`t` (id int);\nCREATE OR REPLACE TABLE MixedCase (id int);\n' +
        'INSERT INTO `db`.`t` VALUES (1);\nSELECT 1;\n',
    );
    const simplified = seen.map((s) => ('name' in s ? { ...s, name: undefined } : s));
    expect(simplified).toEqual([
      { kind: 'use', database: 'a`b', name: undefined },
      { kind: 'use', database: 'plain', name: undefined },
      { kind: 'database', verb: 'create', database: 'x', name: undefined },
      { kind: 'database', verb: 'create', database: 'y', name: undefined },
      { kind: 'database', verb: 'alter', database: 'z', name: undefined },
      { kind: 'other' },
      { kind: 'database', verb: 'drop', database: 'w', name: undefined },
      { kind: 'create-table', database: 'db', table: 't' },
      { kind: 'create-table', table: 'MixedCase' },
      { kind: 'insert', database: 'db', table: 't' },
      { kind: 'other' },
    ]);
  });

  it('follows DELIMITER changes', () => {
    const seen = statements('DELIMITER ;;\nSELECT 1; SELECT 2;;\nDELIMITER $$\nUSE `a`$$\nDELIMITER ;\nUSE `b`;\n');
    expect(seen.map((s) => s.kind)).toEqual(['delimiter', 'other', 'delimiter', 'use', 'delimiter', 'use']);
    expect(seen.filter((s) => s.kind === 'delimiter').map((s) => (s as { delimiter: string }).delimiter)).toEqual([';;', '$$', ';']);
  });
});

describe('DatabaseFilter', () => {
  it('passes a one-database dump through unchanged but for ALTER DATABASE naming the dumped database', async () => {
    const out = await filter(SHOP, { source: 'shop', target: 'shop_copy', mode: 'single' });
    expect(out).toBe(SHOP.replaceAll('ALTER DATABASE `shop`', 'ALTER DATABASE `shop_copy`'));
    expect(out.split('\n')[0]).toBe('/*M!999999\\- enable the sandbox mode */ ');
  });

  it('gives the same output however the stream is cut into pieces', async () => {
    const expected = SHOP.replaceAll('ALTER DATABASE `shop`', 'ALTER DATABASE `new``name`');
    for (const how of ['bytes', 3, { seed: 4 }, { seed: 5 }] as const) {
      expect(await filter(SHOP, { source: 'shop', target: 'new`name', mode: 'single' }, how), JSON.stringify(how)).toBe(expected);
    }
  });

  it('refuses a one-database dump that switches to another database', async () => {
    const dump = HEADER + 'USE `prod`;\n' + table('t', ['(1)']) + FOOTER;
    await expect(filter(dump, { source: 'shop', target: 'copy', mode: 'single' })).rejects.toThrow(/contains "USE `prod`"/);
    await expect(filter(HEADER + 'CREATE DATABASE `prod`;\n' + FOOTER, { source: 'shop', target: 'copy', mode: 'single' })).rejects.toThrow(LifeboatError);
    await expect(filter(HEADER + 'DROP DATABASE `shop`;\n' + FOOTER, { source: 'shop', target: 'copy', mode: 'single' })).rejects.toThrow(/drops database/);
    await expect(filter(HEADER + 'INSERT INTO `prod`.`t` VALUES (1);\n' + FOOTER, { source: 'shop', target: 'copy', mode: 'single' })).rejects.toThrow(/with its database/);
  });

  it('keeps one database of a several-database dump, renamed, and leaves the others out', async () => {
    const dump =
      HEADER +
      'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n\nUSE `shop`;\n' +
      table('orders', ["(1,'shop')"]) +
      'DELIMITER ;;\nCREATE PROCEDURE `p`() BEGIN SELECT 1; END ;;\nDELIMITER ;\n' +
      'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `crm` /*!40100 DEFAULT CHARACTER SET latin1 */;\n\nUSE `crm`;\n' +
      table('contacts', ["(1,'crm')", "(2,'crm')"]) +
      '\nUSE `shop`;\n/*!50001 CREATE VIEW `v` AS select 1 */;\n' +
      FOOTER;
    for (const how of [65536, 'bytes', { seed: 6 }] as const) {
      const crm = await filter(dump, { source: 'crm', target: 'crm_restored', mode: 'select' }, how);
      expect(crm).toContain('CREATE DATABASE /*!32312 IF NOT EXISTS*/ `crm_restored` /*!40100 DEFAULT CHARACTER SET latin1 */;');
      expect(crm).toContain('USE `crm_restored`;');
      expect(crm).toContain("INSERT INTO `contacts` VALUES\n(1,'crm'),\n(2,'crm');");
      expect(crm).not.toMatch(/`shop`|orders|PROCEDURE|CREATE VIEW/);
      // The session settings before the first database stay, the sandbox line first; what follows the last
      // USE belongs to that database (here shop) and is left out, the trailer with it.
      expect(crm.startsWith(HEADER)).toBe(true);
      const contents = await count(crm);
      expect(contents.databases).toEqual([{ name: 'crm_restored', tables: [{ name: 'contacts', rows: 2 }] }]);
    }
    const shop = await filter(dump, { source: 'shop', target: 'shop', mode: 'select' });
    expect(shop).toContain('PROCEDURE');
    expect(shop).toContain('CREATE VIEW');
    expect(shop).not.toMatch(/crm|contacts/);
  });
});

describe('DatabaseFilter on a cut-short dump', () => {
  it('fails instead of passing on the piece of statement it ends in', async () => {
    const cut = SHOP.slice(0, SHOP.indexOf("(3,'it''s") + 4);
    await expect(filter(cut, { source: 'shop', target: 'copy', mode: 'single' })).rejects.toThrow(/the dump is incomplete: the dump ends inside a quoted string/);
    const between = SHOP.slice(0, SHOP.indexOf('CREATE TABLE `with space`'));
    await expect(filter(between, { source: 'shop', target: 'copy', mode: 'single' })).resolves.toBe(between);
  });
});

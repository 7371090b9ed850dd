// Realistic text for the benchmark corpus: application logs, web access logs, source code, JSON documents and
// CSV exports. Each generator draws its varying parts (timestamps, ids, addresses, amounts, identifiers) from
// the given Rng, so the text compresses about as well as the real thing (logs ~5–10× with zstd -3), not 100×.

const WORDS = (
  'account address agent alert amount archive audit balance batch billing block branch bucket buffer cache ' +
  'campaign cart catalog channel chart checkout claim client cluster column comment config contact contract ' +
  'counter coupon credit currency customer dashboard delivery device discount document domain draft entry ' +
  'event export feature field filter folder form gateway group handler header history import index invoice ' +
  'item job key label layout ledger limit line link list locale lock member message metric module node note ' +
  'notice offer order owner package page partner payload payment period permission plan policy pool price ' +
  'profile project promo quota rate receipt record region release report request resource result review role ' +
  'route rule schedule schema scope segment session setting shipment signal snapshot source status stock store ' +
  'stream subscription supplier survey table tag task tax team template tenant theme ticket timer token topic ' +
  'tracker transfer trigger upload usage user value vendor version voucher warehouse webhook widget window ' +
  'workflow zone'
).split(' ');
const VERBS = (
  'apply build calculate check close collect compute convert create decode delete dispatch encode ensure fetch ' +
  'filter find flush format handle import init load lookup map merge normalize notify open parse persist prepare ' +
  'process publish read refresh register reload remove render resolve restore retry save schedule send serialize ' +
  'sync track transform update upsert validate verify write'
).split(' ');
const ADJECTIVES = 'active pending default current next previous total remote local cached primary internal external raw parsed visible hidden stale fresh'.split(' ');
const FIRST = 'Anna Ben Carla David Elena Felix Greta Hugo Ines Jonas Karin Leon Maria Nils Olga Paul Rosa Sven Tara Ugo Vera Wim Xenia Yusuf Zoe Amir Bianca Chen Dario Emma Farid Gina Hanna Igor Julia Kai Lena Milan Nora Omar Pia Rafael Sara Timo Ulla Viktor Wanda'.split(' ');
const LAST = 'Adler Becker Costa Dietrich Eriksen Fischer Garcia Hansen Ivanova Jensen Keller Lang Meyer Novak Olsen Petrov Quinn Rossi Schmidt Tanaka Ueda Vogel Weber Xu Yilmaz Zimmermann Berg Conti Dubois Engel Fuchs Graf Horvat Ito Jovanovic Kowalski Lindqvist Moreau Nguyen Ortega Peters Richter Santos Torres Urban Vidal Wagner'.split(' ');
const CITIES = 'Berlin Hamburg Munich Cologne Vienna Zurich Lyon Milan Madrid Porto Ghent Utrecht Aarhus Malmo Bergen Tampere Krakow Brno Graz Leipzig Dresden Bremen Basel Turin Seville Lisbon Antwerp Rotterdam Oslo Helsinki'.split(' ');
const STREETS = 'Main Station Church Garden Mill Lake River Park School Market Castle Bridge Forest Hill Meadow Harbor Baker King Queen Linden Oak Birch Elm Maple'.split(' ');
const SERVICES = ['orders-api', 'billing-worker', 'auth-service', 'search-indexer', 'notification-svc', 'inventory-api', 'report-builder', 'gateway'];
const METHODS = ['GET', 'GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH'];
const STATUS = [200, 200, 200, 200, 200, 200, 200, 201, 204, 301, 304, 304, 400, 401, 403, 404, 404, 409, 422, 500, 502, 503];
const CURRENCIES = ['EUR', 'EUR', 'EUR', 'USD', 'GBP', 'CHF', 'SEK', 'PLN'];
const AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15',
  'Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36',
  'curl/8.5.0',
  'python-requests/2.31.0',
  'Googlebot/2.1 (+http://www.google.com/bot.html)',
  'kube-probe/1.29',
];
const ERRORS = [
  'connection reset by peer',
  'context deadline exceeded',
  'upstream timed out (110: Connection timed out) while reading response header',
  'duplicate key value violates unique constraint',
  'could not serialize access due to concurrent update',
  'invalid token signature',
  'rate limit exceeded for tenant',
  'no route to host',
  'deadlock detected',
  'certificate has expired',
];

const cap = (w) => w[0].toUpperCase() + w.slice(1);
const ip = (rng) => (rng.chance(0.7) ? `10.${rng.int(40)}.${rng.int(256)}.${1 + rng.int(254)}` : `${11 + rng.int(200)}.${rng.int(256)}.${rng.int(256)}.${1 + rng.int(254)}`);
/** Ids are skewed: a few customers and orders are much more frequent than the rest, as in real traffic. */
const skewed = (rng, max) => 1 + Math.floor(max * rng.float() ** 3);
const apiPath = (rng) => {
  const res = rng.pick(WORDS);
  switch (rng.int(6)) {
    case 0: return `/api/v2/${res}s`;
    case 1: return `/api/v2/${res}s/${skewed(rng, 900000)}`;
    case 2: return `/api/v2/${res}s/${skewed(rng, 900000)}/${rng.pick(WORDS)}s`;
    case 3: return `/api/v1/${res}s?page=${1 + rng.int(40)}&limit=${rng.pick([20, 50, 100])}`;
    case 4: return `/static/${rng.pick(['js', 'css', 'img'])}/${res}.${rng.hex(8)}.${rng.pick(['js', 'css', 'png', 'svg'])}`;
    default: return `/${res}/${rng.pick(WORDS)}`;
  }
};

const pad2 = (n) => (n < 10 ? `0${n}` : `${n}`);
const pad3 = (n) => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : `${n}`);
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A clock that moves forward by random steps; formatting is cached per second (it is the hot path). */
export class Clock {
  constructor(startMs) {
    this.ms = startMs;
    this.second = -1;
    this.iso = '';
    this.clf = '';
  }
  tick(rng, meanGapMs) {
    this.ms += 1 + rng.int(2 * meanGapMs);
    const second = Math.floor(this.ms / 1000);
    if (second !== this.second) {
      this.second = second;
      const d = new Date(second * 1000);
      this.iso = d.toISOString().slice(0, 19);
      this.clf = `${pad2(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000`;
    }
  }
  isoMs() {
    return `${this.iso}.${pad3(this.ms % 1000)}Z`;
  }
}

function stackTrace(rng) {
  let out = `Error: ${rng.pick(ERRORS)}\n`;
  const frames = 4 + rng.int(8);
  for (let i = 0; i < frames; i++) {
    out += `    at ${cap(rng.pick(WORDS))}${cap(rng.pick(WORDS))}.${rng.pick(VERBS)}${cap(rng.pick(WORDS))} (/srv/app/dist/${rng.pick(WORDS)}/${rng.pick(WORDS)}.js:${1 + rng.int(900)}:${1 + rng.int(80)})\n`;
  }
  return out;
}

/** One application log line (sometimes with a stack trace). */
export function appLogLine(rng, clock, service, pid) {
  clock.tick(rng, 40);
  const level = rng.weighted([8, 85, 5, 2]);
  const lvl = ['DEBUG', 'INFO ', 'WARN ', 'ERROR'][level];
  const head = `${clock.isoMs()} ${lvl} ${service}[${pid}]: `;
  const req = `req_id=${rng.hex(16)}`;
  if (level === 3) return `${head}unhandled error while handling ${rng.pick(METHODS)} ${apiPath(rng)} ${req}\n${stackTrace(rng)}`;
  if (level === 2) {
    return rng.chance(0.5)
      ? `${head}retrying upstream ${rng.pick(SERVICES)}:${8000 + rng.int(100)} attempt=${1 + rng.int(5)} err="${rng.pick(ERRORS)}" ${req}\n`
      : `${head}slow query took ${200 + rng.int(4000)}ms table=${rng.pick(WORDS)}s rows=${rng.int(50000)} ${req}\n`;
  }
  switch (rng.int(8)) {
    case 0:
    case 1:
    case 2: {
      const status = rng.pick(STATUS);
      return `${head}request completed method=${rng.pick(METHODS)} path=${apiPath(rng)} status=${status} duration_ms=${(rng.int(3000) / 10).toFixed(1)} bytes=${rng.int(90000)} ${req} user_id=${skewed(rng, 250000)}\n`;
    }
    case 3:
      return `${head}cache ${rng.chance(0.8) ? 'hit' : 'miss'} key=${rng.pick(WORDS)}:${skewed(rng, 900000)} ttl=${rng.pick([60, 300, 900, 3600])} ${req}\n`;
    case 4:
      return `${head}user ${skewed(rng, 250000)} logged in from ${ip(rng)} via ${rng.pick(['password', 'sso', 'oauth-google', 'oauth-github', 'api-key'])} session=${rng.hex(24)}\n`;
    case 5:
      return `${head}payment ${rng.uuid()} authorised amount=${(rng.int(500000) / 100).toFixed(2)} currency=${rng.pick(CURRENCIES)} customer=${skewed(rng, 250000)} ${req}\n`;
    case 6:
      return `${head}job ${rng.pick(VERBS)}-${rng.pick(WORDS)}s id=${rng.hex(12)} finished in ${(rng.int(60000) / 1000).toFixed(3)}s processed=${rng.int(10000)} failed=${rng.chance(0.9) ? 0 : rng.int(20)}\n`;
    default:
      return `${head}queue depth=${rng.int(5000)} consumer=${rng.pick(WORDS)}-${rng.pick(VERBS)}er-${rng.int(8)} lag_ms=${rng.int(20000)}\n`;
  }
}

/** One nginx "combined" access log line. */
export function accessLogLine(rng, clock) {
  clock.tick(rng, 15);
  const status = rng.pick(STATUS);
  const referer = rng.chance(0.4) ? `"https://shop.example.com${apiPath(rng)}"` : '"-"';
  return `${ip(rng)} - ${rng.chance(0.2) ? `u${skewed(rng, 250000)}` : '-'} [${clock.clf}] "${rng.pick(METHODS)} ${apiPath(rng)} HTTP/1.1" ${status} ${status === 304 ? 0 : rng.int(120000)} ${referer} "${rng.pick(AGENTS)}" rt=${(rng.int(2000) / 1000).toFixed(3)}\n`;
}

/** Appends log text to `sink` until it holds about `bytes` more. */
export function writeLog(sink, rng, bytes, { kind, service, startMs }) {
  const clock = new Clock(startMs);
  const pid = 1000 + rng.int(30000);
  const target = sink.written + bytes;
  while (sink.written + sink.pending < target) sink.put(kind === 'access' ? accessLogLine(rng, clock) : appLogLine(rng, clock, service, pid));
}

const LICENSE =
  '// Copyright 2019-2024 Example Shop GmbH. All rights reserved.\n' +
  '// Licensed under the Apache License, Version 2.0; you may not use this file except in compliance with the License.\n' +
  '// You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0\n\n';

function ident(rng, parts = 1 + rng.int(3)) {
  let out = rng.chance(0.4) ? rng.pick(ADJECTIVES) : rng.pick(WORDS);
  for (let i = 1; i < parts; i++) out += cap(rng.pick(WORDS));
  return out;
}
const typeName = (rng) => cap(rng.pick(WORDS)) + cap(rng.pick(WORDS));

function tsFunction(rng) {
  const name = `${rng.pick(VERBS)}${cap(ident(rng, 1 + rng.int(2)))}`;
  const argType = typeName(rng);
  const arg = rng.pick(WORDS);
  let out = `/**\n * ${cap(rng.pick(VERBS))}s the ${rng.pick(ADJECTIVES)} ${rng.pick(WORDS)} of a ${rng.pick(WORDS)} and returns the ${rng.pick(WORDS)}.\n */\n`;
  out += `export ${rng.chance(0.5) ? 'async ' : ''}function ${name}(${arg}: ${argType}, options: ${typeName(rng)}Options = {}): ${rng.pick(['number', 'string', 'boolean', `${typeName(rng)}[]`, `Promise<${typeName(rng)}>`])} {\n`;
  const lines = 3 + rng.int(14);
  for (let i = 0; i < lines; i++) {
    const v = ident(rng);
    switch (rng.int(7)) {
      case 0: out += `  const ${v} = ${arg}.${ident(rng)}.${rng.pick(['length', 'size', 'id', 'value'])};\n`; break;
      case 1: out += `  if (${v} === ${rng.pick(['undefined', 'null', '0', "''", 'false'])}) {\n    throw new ${typeName(rng)}Error('${rng.pick(WORDS)} ${rng.pick(['is missing', 'has no items', 'is not valid', 'was already processed'])}');\n  }\n`; break;
      case 2: out += `  for (const ${rng.pick(WORDS)} of ${arg}.${rng.pick(WORDS)}s) {\n    ${v} += ${rng.pick(WORDS)}.${rng.pick(['price', 'amount', 'count', 'weight'])} * ${rng.int(100)};\n  }\n`; break;
      case 3: out += `  const ${v} = await this.${rng.pick(VERBS)}${cap(rng.pick(WORDS))}(${arg}.${rng.pick(WORDS)}Id, { ${rng.pick(WORDS)}: ${rng.int(1000)} });\n`; break;
      case 4: out += `  // ${cap(rng.pick(VERBS))} before ${rng.pick(VERBS)}ing: the ${rng.pick(WORDS)} may change while we wait.\n`; break;
      case 5: out += `  log.${rng.pick(['debug', 'info', 'warn'])}('${rng.pick(VERBS)} ${rng.pick(WORDS)}', { ${rng.pick(WORDS)}Id: ${arg}.id, ${v} });\n`; break;
      default: out += `  ${v} = Math.${rng.pick(['max', 'min', 'round'])}(${v}, options.${rng.pick(WORDS)}Limit ?? ${rng.int(5000)});\n`; break;
    }
  }
  return `${out}  return ${ident(rng)};\n}\n\n`;
}

function pyFunction(rng) {
  const name = `${rng.pick(VERBS)}_${rng.pick(WORDS)}${rng.chance(0.5) ? `_${rng.pick(WORDS)}` : ''}`;
  const arg = rng.pick(WORDS);
  let out = `def ${name}(${arg}: ${typeName(rng)}, ${rng.pick(WORDS)}_id: int, *, ${rng.pick(ADJECTIVES)}: bool = False) -> ${rng.pick(['int', 'str', 'bool', 'list', 'dict', 'None'])}:\n    """${cap(rng.pick(VERBS))} the ${rng.pick(WORDS)} for a ${rng.pick(WORDS)}."""\n`;
  const lines = 3 + rng.int(12);
  for (let i = 0; i < lines; i++) {
    const v = `${rng.pick(ADJECTIVES)}_${rng.pick(WORDS)}`;
    switch (rng.int(5)) {
      case 0: out += `    ${v} = ${arg}.${rng.pick(WORDS)}s.filter(${rng.pick(WORDS)}_id=${rng.pick(WORDS)}_id).count()\n`; break;
      case 1: out += `    if not ${v}:\n        raise ${typeName(rng)}Error(f"${rng.pick(WORDS)} {${arg}.id} ${rng.pick(['is missing', 'is stale', 'is locked'])}")\n`; break;
      case 2: out += `    for ${rng.pick(WORDS)} in ${arg}.${rng.pick(WORDS)}s:\n        ${v} += ${rng.pick(WORDS)}.${rng.pick(['price', 'amount', 'total'])}\n`; break;
      case 3: out += `    logger.${rng.pick(['debug', 'info', 'warning'])}("${rng.pick(VERBS)} %s", ${arg}.id)\n`; break;
      default: out += `    ${v} = min(${v}, settings.${rng.pick(WORDS).toUpperCase()}_LIMIT)\n`; break;
    }
  }
  return `${out}    return ${rng.pick(ADJECTIVES)}_${rng.pick(WORDS)}\n\n\n`;
}

/** A source file of about `bytes` (TypeScript or Python by extension). */
export function sourceFile(rng, bytes, ext) {
  let out;
  if (ext === 'py') {
    out = `# Copyright 2019-2024 Example Shop GmbH.\n"""${cap(rng.pick(WORDS))} ${rng.pick(WORDS)} helpers."""\nfrom __future__ import annotations\n\nimport logging\nfrom .${rng.pick(WORDS)} import ${typeName(rng)}, ${typeName(rng)}\n\nlogger = logging.getLogger(__name__)\n\n\n`;
    while (out.length < bytes) out += pyFunction(rng);
  } else {
    out = LICENSE;
    const imports = 1 + rng.int(5);
    for (let i = 0; i < imports; i++) out += `import { ${typeName(rng)}, ${typeName(rng)} } from '${rng.pick(['../', './', '../../'])}${rng.pick(WORDS)}/${rng.pick(WORDS)}';\n`;
    out += `\nexport interface ${typeName(rng)} {\n`;
    const fields = 2 + rng.int(8);
    for (let i = 0; i < fields; i++) out += `  ${ident(rng)}${rng.chance(0.3) ? '?' : ''}: ${rng.pick(['string', 'number', 'boolean', 'Date', `${typeName(rng)}[]`])};\n`;
    out += '}\n\n';
    while (out.length < bytes) out += tsFunction(rng);
  }
  return out;
}

export function person(rng) {
  const first = rng.pick(FIRST);
  const last = rng.pick(LAST);
  return { first, last, email: `${first}.${last}${rng.chance(0.5) ? rng.int(100) : ''}@${rng.pick(['example.com', 'mail.test', 'shop.example', 'corp.example'])}`.toLowerCase() };
}

export function address(rng) {
  return `${rng.pick(STREETS)} ${rng.pick(['Street', 'Road', 'Lane', 'Way'])} ${1 + rng.int(240)}, ${10000 + rng.int(89999)} ${rng.pick(CITIES)}`;
}

/** A JSON document (an order, a customer, an event) of roughly `bytes`. */
export function jsonDocument(rng, bytes, startMs) {
  const p = person(rng);
  const doc = {
    id: rng.uuid(),
    type: rng.pick(['order', 'customer', 'event', 'invoice', 'ticket']),
    createdAt: new Date(startMs + rng.int(86_400_000 * 365)).toISOString(),
    updatedAt: new Date(startMs + rng.int(86_400_000 * 400)).toISOString(),
    owner: { id: skewed(rng, 250000), name: `${p.first} ${p.last}`, email: p.email, address: address(rng) },
    status: rng.pick(['open', 'paid', 'shipped', 'cancelled', 'refunded', 'closed']),
    tags: Array.from({ length: rng.int(5) }, () => rng.pick(WORDS)),
    items: [],
    metadata: { source: rng.pick(['web', 'ios', 'android', 'api', 'import']), version: `${1 + rng.int(4)}.${rng.int(20)}.${rng.int(10)}`, trace: rng.hex(32) },
  };
  let size = 600;
  while (size < bytes) {
    doc.items.push({ sku: `${rng.pick(WORDS).slice(0, 3).toUpperCase()}-${rng.int(100000)}`, name: `${cap(rng.pick(ADJECTIVES))} ${rng.pick(WORDS)}`, quantity: 1 + rng.int(12), unitPrice: rng.int(100000) / 100, currency: rng.pick(CURRENCIES) });
    size += 140;
  }
  return `${JSON.stringify(doc, null, 2)}\n`;
}

export const CSV_HEADER = 'date,order_id,customer_id,customer_name,city,sku,quantity,unit_price,currency,status,channel\n';

export function csvRow(rng, clock) {
  clock.tick(rng, 20_000);
  const p = person(rng);
  return `${clock.iso.slice(0, 10)},${100000000 + rng.int(900000000)},${skewed(rng, 250000)},${p.first} ${p.last},${rng.pick(CITIES)},${rng.pick(WORDS).slice(0, 3).toUpperCase()}-${rng.int(100000)},${1 + rng.int(12)},${(rng.int(100000) / 100).toFixed(2)},${rng.pick(CURRENCIES)},${rng.pick(['paid', 'shipped', 'cancelled', 'refunded'])},${rng.pick(['web', 'ios', 'android', 'store'])}\n`;
}

/** A customer record of exactly 84 characters, for the database series' filler column. */
export function customerFiller(rng) {
  const p = person(rng);
  const phone = `+49 ${30 + rng.int(900)} ${1000000 + rng.int(8999999)}`;
  return `${p.first} ${p.last};${p.email};${address(rng)};${phone}`.padEnd(84, ' ').slice(0, 84);
}

export { WORDS, SERVICES };

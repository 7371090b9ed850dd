// Deterministic pseudo-random numbers for the benchmark corpus: xoshiro128** (32-bit, fast in V8), seeded through
// splitmix32 from a number or a string. Not for secrets; the point is that the same seed gives the same bytes.

/** FNV-1a of a string, for deriving one independent stream per file from the corpus seed and the file's path. */
export function hashString(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class Rng {
  constructor(...seeds) {
    let s = 0x9e3779b9;
    for (const seed of seeds) s = (Math.imul(s ^ (typeof seed === 'string' ? hashString(seed) : seed >>> 0), 0x85ebca6b) + 0x6b43a9b5) >>> 0;
    const splitmix = () => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = splitmix();
    this.b = splitmix();
    this.c = splitmix();
    this.d = splitmix() | 1;
  }

  /** 32 random bits as an unsigned integer. */
  next() {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9);
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r >>> 0;
  }

  /** An integer in [0, n). */
  int(n) {
    return n <= 1 ? 0 : this.next() % n;
  }

  /** An integer in [lo, hi]. */
  range(lo, hi) {
    return lo + this.int(hi - lo + 1);
  }

  float() {
    return this.next() / 4294967296;
  }

  chance(p) {
    return this.float() < p;
  }

  pick(list) {
    return list[this.next() % list.length];
  }

  /** Standard normal (Box–Muller). */
  gauss() {
    const u = 1 - this.float();
    const v = this.float();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Log-normal with the given median, clamped. */
  logNormal(median, sigma, min, max) {
    return Math.max(min, Math.min(max, Math.round(median * Math.exp(sigma * this.gauss()))));
  }

  /** Index into weights (non-negative numbers), proportional to weight. */
  weighted(weights) {
    let total = 0;
    for (const w of weights) total += w;
    let x = this.float() * total;
    for (let i = 0; i < weights.length; i++) {
      x -= weights[i];
      if (x < 0) return i;
    }
    return weights.length - 1;
  }

  hex(chars) {
    let out = '';
    while (out.length < chars) out += this.next().toString(16).padStart(8, '0');
    return out.slice(0, chars);
  }

  uuid() {
    const h = this.hex(32);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${'89ab'[this.int(4)]}${h.slice(17, 20)}-${h.slice(20, 32)}`;
  }

  /**
   * Fills a buffer with random bytes, fast (xorshift128 in locals, seeded from this generator; about 1 GB/s):
   * incompressible data for the "binary" files.
   */
  fill(buf) {
    let x = this.next() | 1;
    let y = this.next();
    let z = this.next();
    let w = this.next();
    const words = buf.length >>> 2;
    const aligned = buf.byteOffset % 4 === 0;
    const u32 = aligned ? new Uint32Array(buf.buffer, buf.byteOffset, words) : new Uint32Array(words);
    for (let i = 0; i < words; i++) {
      const t = x ^ (x << 11);
      x = y;
      y = z;
      z = w;
      w = w ^ (w >>> 19) ^ t ^ (t >>> 8);
      u32[i] = w;
    }
    if (!aligned) Buffer.from(u32.buffer).copy(buf, 0);
    for (let i = words * 4; i < buf.length; i++) buf[i] = this.next() & 0xff;
    return buf;
  }
}

function rotl(x, k) {
  return (x << k) | (x >>> (32 - k));
}

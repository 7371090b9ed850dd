import { Header, Pax } from 'tar';
import { describe, expect, it } from 'vitest';
import { encodeUstar, encodeWithPaxMtime, type UstarFields } from './ustar.js';

/** node-tar's block for the same entry, and whether it needs a pax header. */
function nodeTar(f: UstarFields): { block: Buffer; needPax: boolean } {
  const block = Buffer.alloc(512);
  const header = new Header({ path: f.path, type: f.type, mode: f.mode, uid: f.uid, gid: f.gid, size: f.size, mtime: new Date(f.mtimeMs), linkpath: f.linkpath, uname: f.uname, gname: f.gname });
  const needPax = header.encode(block);
  return { block, needPax };
}

function ours(f: UstarFields): Buffer | null {
  const block = Buffer.alloc(512);
  return encodeUstar(block, f) ? block : null;
}

const base: UstarFields = { path: 'srv/app/data/notes.txt', type: 'File', mode: 0o644, uid: 1000, gid: 1000, size: 4321, mtimeMs: 1_700_000_000_000, uname: 'app', gname: 'app' };

/** A seeded xorshift32, so a failure names an input that can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

describe('encodeUstar', () => {
  it('writes the bytes node-tar writes for the common entries', () => {
    const cases: UstarFields[] = [
      base,
      { ...base, type: 'Directory', path: 'srv/app/data/', size: 0, mode: 0o2755 },
      { ...base, type: 'SymbolicLink', path: 'srv/app/current', size: 0, linkpath: '../releases/2026-11-25', mode: 0o777 },
      { ...base, type: 'Link', path: 'srv/app/second-name', size: 0, linkpath: 'srv/app/data/notes.txt' },
      { ...base, uname: undefined, gname: undefined, uid: 0, gid: 0, mode: 0, size: 0, mtimeMs: 0 },
      { ...base, path: 'a'.repeat(99), linkpath: 'b'.repeat(100), uname: 'u'.repeat(32), gname: 'g'.repeat(32) },
      { ...base, mode: 0o7777777, uid: 0o7777777, gid: 0o7777777, size: 0o77777777777, mtimeMs: 0o77777777777 * 1000 },
      { ...base, mode: 0o7, uid: 0o77, size: 0o7777777777, mtimeMs: 1000 },
    ];
    for (const f of cases) {
      const expected = nodeTar(f);
      expect({ f, needPax: expected.needPax }).toEqual({ f, needPax: false });
      expect({ f, block: ours(f)?.toString('hex') }).toEqual({ f, block: expected.block.toString('hex') });
    }
  });

  it('agrees with node-tar on random entries, and leaves to it every one that needs more than ustar', () => {
    const next = random(0x5eed);
    const pick = <T>(items: T[]) => items[Math.floor(next() * items.length)]!;
    const ascii = ['a', 'Z', '0', '.', '-', '_', '/', ' ', '~'];
    // One text in five may hold characters past ASCII (which node-tar must carry in pax records).
    const text = (length: number) => {
      const chars = next() < 0.2 ? [...ascii, 'é', '日'] : ascii;
      return Array.from({ length }, () => pick(chars)).join('');
    };
    let fast = 0;
    for (let i = 0; i < 5000; i++) {
      const f: UstarFields = {
        path: text(pick([1, 20, 98, 99, 100, 101, 140])),
        type: pick(['File', 'Directory', 'SymbolicLink', 'Link'] as const),
        mode: pick([0, 0o644, 0o4755, 0o7777, 0o7777777, 0o10000000]),
        uid: pick([0, 1000, 65534, 0o7777777, 0o10000000, 4_294_967_294]),
        gid: pick([0, 1000, 0o7777777, 0o10000000]),
        size: pick([0, 1, 511, 512, 1 << 20, 0o77777777777, 0o77777777777 + 1]),
        mtimeMs: pick([0, 1_700_000_000_000, 1_700_000_000_500, 0o77777777777 * 1000, (0o77777777777 + 1) * 1000, -1000]),
        linkpath: pick([undefined, text(pick([1, 100, 101]))]),
        uname: pick([undefined, 'root', text(pick([8, 32, 33]))]),
        gname: pick([undefined, 'adm', text(pick([8, 32, 33]))]),
      };
      const block = ours(f);
      const expected = nodeTar(f);
      if (block) {
        fast++;
        expect({ i, needPax: expected.needPax, block: block.toString('hex') }).toEqual({ i, needPax: false, block: expected.block.toString('hex') });
      } else {
        // Left to node-tar: only an entry that needs a pax record, a fractional mtime (pax too), text past ASCII,
        // or a path of 100 bytes or more (which node-tar may split into the prefix field).
        const fractional = f.mtimeMs % 1000 !== 0;
        const nonAscii = /[^\x01-\x7f]/.test(f.path + (f.linkpath ?? '') + (f.uname ?? '') + (f.gname ?? ''));
        expect({ i, f, needsMore: expected.needPax || fractional || nonAscii || f.path.length >= 100 }).toEqual({ i, f, needsMore: true });
      }
    }
    // The draw reaches the fast path often enough for the comparison to mean something.
    expect(fast).toBeGreaterThan(100);
  });

  it('writes nothing when it declines', () => {
    const block = Buffer.alloc(512);
    expect(encodeUstar(block, { ...base, path: 'données/été.txt' })).toBe(false);
    expect(encodeUstar(block, { ...base, mtimeMs: 1_700_000_000_123 })).toBe(false);
    expect(encodeUstar(block, { ...base, path: 'x'.repeat(100) })).toBe(false);
    expect(block.equals(Buffer.alloc(512))).toBe(true);
  });

  it('writes the pax header node-tar writes for an entry whose only extra is a fractional mtime', () => {
    const next = random(0xfac7);
    const pick = <T>(items: T[]) => items[Math.floor(next() * items.length)]!;
    const ascii = 'abcXYZ019._-/ ~';
    const text = (length: number) => Array.from({ length }, () => ascii[Math.floor(next() * ascii.length)]!).join('');
    let compared = 0;
    for (let i = 0; i < 3000; i++) {
      const f: UstarFields = {
        path: pick([text(pick([1, 9, 40, 98, 99])), `${text(20)}/`, 'a/b/', 'x']),
        type: pick(['File', 'Directory', 'SymbolicLink', 'Link'] as const),
        mode: pick([0o644, 0o755, 0o4755]),
        uid: pick([0, 1000, 65534, 0o7777777]),
        gid: pick([0, 1000, 0o7777777]),
        size: pick([0, 1, 7, 511, 512, 99_999, 1 << 20]),
        // Whole milliseconds, as the archive writer gives them; some whole seconds (not this path's).
        mtimeMs: pick([1_700_000_000_123, 1_700_000_000_001, 1_700_000_000_999, 1_000_500, 999, 1_700_000_000_000]) + Math.floor(next() * 1000),
        linkpath: pick([undefined, text(pick([1, 30, 100]))]),
        uname: pick([undefined, 'root', '', text(32)]),
        gname: pick([undefined, 'adm', '', text(32)]),
      };
      const data = { path: f.path, type: f.type, mode: f.mode, uid: f.uid, gid: f.gid, size: f.size, mtime: new Date(f.mtimeMs), linkpath: f.linkpath, uname: f.uname, gname: f.gname };
      const block = Buffer.alloc(512);
      new Header(data).encode(block);
      const expected = Buffer.concat([new Pax(data).encode(), block]);
      const both = encodeWithPaxMtime(f);
      expect({ i, f, both: both?.toString('hex') }).toEqual({ i, f, both: expected.toString('hex') });
      compared++;
    }
    expect(compared).toBe(3000);
  });

  it('leaves entries with a newline in a name, or more than a fractional mtime, to node-tar', () => {
    expect(encodeWithPaxMtime({ ...base, mtimeMs: 1_700_000_000_500, path: 'a\nb' })).toBeNull();
    expect(encodeWithPaxMtime({ ...base, mtimeMs: 1_700_000_000_500, linkpath: 'x\ny', type: 'SymbolicLink' })).toBeNull();
    expect(encodeWithPaxMtime({ ...base, mtimeMs: 1_700_000_000_500, path: 'é' })).toBeNull();
    expect(encodeWithPaxMtime({ ...base, mtimeMs: 1_700_000_000_500, uid: 0o10000000 })).toBeNull();
  });
});

import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { LifeboatError } from './errors.js';
import { buildSnapshotManifest, chunkKey, encodeSnapshotManifest, readSnapshotManifest, snapshotIdOfKey, snapshotManifestKey, type SnapshotManifestInput } from './manifest.js';
import { Plan } from './plan.js';

const id = (c: string) => c.repeat(64);
const input: SnapshotManifestInput = {
  snapshotId: 'snap_abc',
  planId: 'web',
  agentId: 'agt_1',
  jobId: 'job_1',
  createdAt: '2025-03-01T02:00:00.000Z',
  startedAt: '2025-03-01T01:59:00.000Z',
  plan: Plan.parse({ id: 'web', agent: 'web-1', steps: [{ files: { paths: ['/srv'] } }] }),
  artifacts: [
    {
      id: 'art_1',
      step: 0,
      kind: 'files',
      name: '/srv',
      size: 30,
      sha256: id('a'),
      metadata: { kind: 'files', paths: ['/srv'], entries: 1, files: 1, directories: 0, symlinks: 0, fileBytes: 30 },
      chunks: [{ id: id('b'), size: 10 }, { id: id('c'), size: 20 }],
    },
  ],
};

describe('snapshot manifests', () => {
  it('lay out the store in one place', () => {
    expect(chunkKey(id('b'))).toBe(`chunks/bb/${id('b')}`);
    expect(snapshotManifestKey('snap_abc')).toBe('snapshots/snap_abc.json');
    expect(snapshotIdOfKey('snapshots/snap_abc.json')).toBe('snap_abc');
    expect(snapshotIdOfKey('snapshots/../x.json')).toBeNull();
  });

  it('round-trip through the bytes written to the store', async () => {
    const manifest = buildSnapshotManifest(input);
    const written = await encodeSnapshotManifest(manifest);
    expect(JSON.parse(gunzipSync(written).toString())).toEqual(manifest);
    const read = readSnapshotManifest(written, 'snapshots/snap_abc.json');
    expect(read).toEqual({ ok: true, manifest, problems: [] });
    // As an older Lifeboat wrote it: plain JSON.
    expect(readSnapshotManifest(Buffer.from(JSON.stringify(manifest)), 'snapshots/snap_abc.json')).toEqual(read);
  });

  it('are stored compressed: a chunk list costs well under its JSON', async () => {
    const chunks = Array.from({ length: 2000 }, (_, i) => ({ id: createHash('sha256').update(String(i)).digest('hex'), size: 1_000_000 + i }));
    const big = buildSnapshotManifest({ ...input, artifacts: [{ ...input.artifacts[0]!, size: chunks.reduce((n, c) => n + c.size, 0), chunks }] });
    const json = JSON.stringify(big).length;
    expect((await encodeSnapshotManifest(big)).length).toBeLessThan(json * 0.6);
  });

  it('are refused at write time when they would not read back', () => {
    const bad = { ...input, artifacts: [{ ...input.artifacts[0]!, kind: 'tape' }] };
    expect(() => buildSnapshotManifest(bad)).toThrow(LifeboatError);
    const short = { ...input, artifacts: [{ ...input.artifacts[0]!, size: 31 }] };
    try {
      buildSnapshotManifest(short);
      expect.unreachable();
    } catch (err) {
      expect((err as LifeboatError).details?.join()).toMatch(/chunk sizes do not add up/);
    }
  });

  it('say what is wrong with a damaged one', async () => {
    const written = await encodeSnapshotManifest(buildSnapshotManifest(input));
    expect(readSnapshotManifest(written.subarray(0, 40))).toEqual({ ok: false, problems: ['not valid gzip (truncated or damaged)'] });
    const good = gunzipSync(written);
    expect(readSnapshotManifest(good.subarray(0, 40))).toEqual({ ok: false, problems: ['not valid JSON (truncated or damaged)'] });
    expect(readSnapshotManifest(good, 'snapshots/snap_other.json')).toMatchObject({ ok: false, problems: [expect.stringMatching(/names snapshot snap_abc/)] });
    const future = JSON.stringify({ ...JSON.parse(good.toString()), format: 3 });
    expect(readSnapshotManifest(Buffer.from(future))).toMatchObject({ ok: false, problems: [expect.stringMatching(/format 3 is not one this Lifeboat reads \(1, 2\)/)] });
    const reordered = JSON.parse(good.toString());
    reordered.artifacts[0].step = 1;
    expect(readSnapshotManifest(Buffer.from(JSON.stringify(reordered)))).toMatchObject({ ok: false, problems: [expect.stringMatching(/steps run 0, 1, 2/)] });
  });

  it('are format 1 without slices of chunks, so older versions still read them, and format 2 with', async () => {
    expect(buildSnapshotManifest(input).format).toBe(1);
    const sliced = { ...input, artifacts: [{ ...input.artifacts[0]!, size: 14, chunks: [{ id: id('b'), size: 10, offset: 2, length: 4 }, { id: id('b'), size: 10 }] }] };
    const manifest = buildSnapshotManifest(sliced);
    expect(manifest.format).toBe(2);
    expect(readSnapshotManifest(await encodeSnapshotManifest(manifest))).toEqual({ ok: true, manifest, problems: [] });
    // A slice counts its length, not its chunk's size; a format 1 manifest with a slice is refused on reading.
    expect(() => buildSnapshotManifest({ ...sliced, artifacts: [{ ...sliced.artifacts[0]!, size: 20 }] })).toThrow(/does not validate/);
    const downgraded = JSON.stringify({ ...manifest, format: 1 });
    expect(readSnapshotManifest(Buffer.from(downgraded))).toMatchObject({ ok: false, problems: [expect.stringMatching(/lists slices of chunks, which format 1 has not/)] });
  });

  it('stay usable when only the plan no longer validates', async () => {
    const raw = JSON.parse(gunzipSync(await encodeSnapshotManifest(buildSnapshotManifest(input))).toString());
    raw.plan.steps = [{ tape: {} }];
    const read = readSnapshotManifest(Buffer.from(JSON.stringify(raw)));
    expect(read.ok).toBe(true);
    if (!read.ok) return;
    expect(read.manifest.plan).toBeNull();
    expect(read.manifest.artifacts).toHaveLength(1);
    expect(read.problems[0]).toMatch(/plan does not validate/);
  });
});

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeTree, generateTree } from './tree.js';
import { enrollAgent, startTestServer, tempDir, type TestAgent, type TestServer } from './harness.js';

const BIG_FILE_MIB = Number(process.env.LIFEBOAT_E2E_BIG_MIB ?? 200);
const RSS_LIMIT = 150 * 1024 * 1024;

describe('a files backup travels from one agent to the server and restores on another', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let source: TestAgent;
  let target: TestAgent;
  let tree: string;

  beforeAll(async () => {
    dir = await tempDir('e2e');
    server = await startTestServer(join(dir.path, 'server'));
    source = await enrollAgent(server, dir.path, 'web-1');
    target = await enrollAgent(server, dir.path, 'new-vm', ['role=restore']);
    await source.start();
    await target.start();
    tree = join(dir.path, 'app');
    await generateTree(tree, { bigFileBytes: BIG_FILE_MIB * 1024 * 1024 });
  });

  afterAll(async () => {
    await source?.proc?.kill();
    await target?.proc?.kill();
    await server?.proc.kill();
    await dir?.cleanup();
  });

  it('backs up with `backup now --wait` and restores byte for byte, with modes and mtimes, on a second agent', async () => {
    const planFile = join(dir.path, 'plans.yaml');
    await writeFile(
      planFile,
      `plans:\n  - id: app-files\n    agent: web-1\n    schedule: "0 3 * * *"\n    rpo: 26h\n    steps:\n      - files: { paths: ["${tree}"], exclude: ["**/*.tmp"] }\n`,
    );
    await writeFile(join(tree, 'scratch.tmp'), 'excluded');
    const applied = await server.admin(['plan', 'apply', planFile]);
    expect(applied.code, applied.stderr).toBe(0);

    const backup = await server.admin(['backup', 'now', 'app-files', '--wait']);
    expect(backup.code, backup.stderr + backup.stdout).toBe(0);

    const list = await server.admin(['snapshots', 'list', '--plan', 'app-files', '--json']);
    expect(list.code, list.stderr).toBe(0);
    const snapshots = JSON.parse(list.stdout) as { id: string; status: string; size: number; agentName: string }[];
    expect(snapshots).toHaveLength(1);
    expect(snapshots[0]!.status).toBe('complete');
    expect(snapshots[0]!.agentName).toBe('web-1');
    expect(snapshots[0]!.size).toBeGreaterThan(BIG_FILE_MIB * 1024 * 1024);

    const restoreDir = join(dir.path, 'restored');
    const restore = await server.admin(['restore', snapshots[0]!.id, '--agent', 'new-vm', '--to', restoreDir]);
    expect(restore.code, restore.stderr + restore.stdout).toBe(0);

    const original = (await describeTree(tree)).filter((l) => !l.startsWith('scratch.tmp'));
    const restored = await describeTree(join(restoreDir, tree.slice(1)));
    expect(restored).toEqual(original);

    // A second restore into the same, now non-empty, directory is refused without --force.
    const again = await server.admin(['restore', snapshots[0]!.id, '--agent', 'new-vm', '--to', restoreDir]);
    expect(again.code).not.toBe(0);
    expect(again.stderr + again.stdout).toMatch(/not empty.*--force/);
  });

  it(`keeps both processes under ${RSS_LIMIT / 1024 / 1024} MiB of RSS while moving the ${BIG_FILE_MIB} MiB file`, async () => {
    for (const proc of [server.proc, source.proc!, target.proc!]) {
      const rss = await proc.peakRss();
      console.log(`peak RSS ${proc === server.proc ? "server" : proc === source.proc ? "source agent" : "restore agent"}: ${(rss / 1048576).toFixed(1)} MiB`);
      expect(rss).toBeLessThan(RSS_LIMIT);
    }
  });
});

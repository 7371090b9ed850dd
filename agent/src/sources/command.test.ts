import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LifeboatError, type ArtifactForRestore, type CommandStepOptions } from '@lifeboat/shared';
import { createCommandSource } from './command.js';
import { fakeJobContext, collect, rejection } from './test-context.suite.js';
import { processAlive } from '../scratch/common.js';

const source = createCommandSource({ killGraceMs: 500 });
let base = '';

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'lifeboat-command-test-'));
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

/** A step as the plan schema leaves it (timeout defaulted); the test uses sh as the program, given as argv. */
function step(run: string[], extra: Partial<CommandStepOptions> = {}): CommandStepOptions {
  return { name: 'dump', run, timeout: '6h', ...extra };
}
const sh = (script: string) => ['sh', '-c', script];



/** Runs a step to its verdict, reading the stream as a consumer would. */
async function run(options: CommandStepOptions, t = fakeJobContext()) {
  const artifact = await source.backup(options, t.ctx);
  const data = collect(artifact.stream).catch(() => null);
  const metadata = artifact.metadata;
  return { artifact, data, metadata, ...t };
}


describe('command backup', () => {
  it("streams the command's standard output as the artifact", async () => {
    const { artifact, data, metadata, progress } = await run(step(sh('printf "dump header\\n"; head -c 100000 /dev/zero; printf "\\nend"'), { name: 'mongodb' }));
    expect(artifact).toMatchObject({ kind: 'command', name: 'mongodb' });
    const bytes = (await data)!;
    expect(bytes.length).toBe(12 + 100000 + 4);
    expect(bytes.subarray(0, 12).toString()).toBe('dump header\n');
    expect(await metadata).toEqual({ kind: 'command', name: 'mongodb', program: 'sh', exitCode: 0 });
    expect(progress.at(-1)).toMatchObject({ phase: 'running command', bytes: 100016 });
  });

  it('runs in the working directory it is given', async () => {
    const { data, metadata } = await run(step(['pwd'], { cwd: base }));
    await metadata;
    expect((await data)!.toString().trim()).toBe(fs.realpathSync(base));
  });

  it('fails on a non-zero exit with the trimmed stderr, even after writing output', async () => {
    const { data, metadata } = await run(step(sh('printf "half a dump"; echo "  connection refused: 127.0.0.1:27017  " >&2; exit 3')));
    const err = await rejection(metadata);
    expect(err.code).toBe('source_failed');
    expect(err.message).toBe('command "dump" failed (exit code 3): connection refused: 127.0.0.1:27017');
    // The consumer saw the failure too, never a clean end of a partial dump.
    expect(await data).toBeNull();
  });

  it('redacts secrets a failing command prints', async () => {
    const { metadata } = await run(step(sh('echo "auth failed for mongodb://backup:hunter2@db/admin password=hunter2" >&2; exit 1')));
    const err = await rejection(metadata);
    expect(err.message).not.toContain('hunter2');
    expect(err.message).toContain('mongodb://backup:***@db/admin password=***');
  });

  it('fails when the command is killed by a signal', async () => {
    const { metadata } = await run(step(sh('printf partial; kill -TERM $$')));
    const err = await rejection(metadata);
    expect(err.code).toBe('source_failed');
    expect(err.message).toBe('command "dump" was killed by SIGTERM (it printed no error message)');
  });

  it('stops a command that runs past its timeout, with what it had said', async () => {
    const startedAt = Date.now();
    const { metadata } = await run(step(sh('echo "waiting for lock" >&2; printf x; sleep 30'), { timeout: '1s' }));
    const err = await rejection(metadata);
    expect(err.code).toBe('source_failed');
    expect(err.message).toBe('command "dump" timed out after 1.0s and was stopped: waiting for lock');
    expect(Date.now() - startedAt).toBeLessThan(4000);
  });

  it('fails on zero bytes of output', async () => {
    const { metadata } = await run(step(sh('echo "no collections" >&2')));
    const err = await rejection(metadata);
    expect(err.message).toBe('command "dump" produced no output: no collections');
  });

  it('stops the command when the job is cancelled', async () => {
    const t = fakeJobContext();
    const artifact = await source.backup(step(sh('echo $$; sleep 30')), t.ctx);
    const iterator = (artifact.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const pid = Number(String((await iterator.next()).value).trim());
    expect(processAlive(pid)).toBe(true);
    t.abort(new LifeboatError('cancelled', 'cancelled by admin'));
    const err = await rejection(artifact.metadata);
    expect(err.code).toBe('cancelled');
    expect(err.message).toBe('cancelled by admin');
    expect(processAlive(pid)).toBe(false);
  });

  it('does not pass the agent\'s secrets to the command', async () => {
    process.env.LIFEBOAT_TEST_DB_PASSWORD = 'hunter2';
    process.env.PGPASSWORD = 'hunter3';
    try {
      const { data, metadata } = await run(step(sh('printf "%s/%s/%s" "${LIFEBOAT_TEST_DB_PASSWORD:-absent}" "${PGPASSWORD:-absent}" "${PATH:+path}"')));
      await metadata;
      expect((await data)!.toString()).toBe('absent/absent/path');
    } finally {
      delete process.env.LIFEBOAT_TEST_DB_PASSWORD;
      delete process.env.PGPASSWORD;
    }
  });

  it('refuses a missing working directory before running anything (path_not_found)', async () => {
    const err = await rejection(source.backup(step(['true'], { cwd: path.join(base, 'nope') }), fakeJobContext().ctx));
    expect(err.code).toBe('path_not_found');
    expect(err.message).toBe(`working directory ${path.join(base, 'nope')} of command "dump" does not exist on this agent (plan step command.cwd)`);
  });

  it('fails clearly when the program does not exist, without its arguments', async () => {
    const { metadata } = await run(step(['/opt/nowhere/mongodump', '--password', 'hunter2']));
    const err = await rejection(metadata);
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(/^command "dump" could not be started: program "mongodump" was not found/);
    expect(err.message).not.toContain('hunter2');
  });
});

describe('command restore', () => {
  const data = Buffer.from('an archive from mongodump\n'.repeat(1000));
  const artifact = (name: string, size = data.length): ArtifactForRestore => ({
    artifactId: 'art_test',
    step: 0,
    kind: 'command',
    name,
    size,
    sha256: createHash('sha256').update(data).digest('hex'),
    metadata: { kind: 'command', name, program: 'mongodump', exitCode: 0 },
    chunks: [],
  });

  it('writes <name>.out into the directory and says how to feed it back', async () => {
    const target = path.join(base, 'restored');
    const result = await source.restore(Readable.from([data]), { kind: 'dir', path: target, force: false }, { preserveOwner: false, artifact: artifact('mongodb') }, fakeJobContext().ctx);
    expect(fs.readdirSync(target)).toEqual(['mongodb.out']);
    expect(fs.readFileSync(path.join(target, 'mongodb.out')).equals(data)).toBe(true);
    expect(result.summary).toBe(
      `wrote the output of command "mongodb" (made by mongodump) to ${target}/mongodb.out (25.4 KiB); ` +
        `to restore it, run the plan step's command.restore (or the tool's own restore program) with the file on standard input: RESTORE-COMMAND < ${target}/mongodb.out`,
    );
  });

  it('fails, leaving nothing, when fewer bytes arrive than the artifact holds', async () => {
    const target = path.join(base, 'restored-short');
    const err = await rejection(
      source.restore(Readable.from([data.subarray(0, 100)]), { kind: 'dir', path: target, force: false }, { preserveOwner: false, artifact: artifact('mongodb') }, fakeJobContext().ctx),
    );
    expect(err.code).toBe('restore_failed');
    expect(fs.readdirSync(target)).toEqual([]);
  });

  it('fails, leaving nothing, when the artifact stream breaks', async () => {
    const target = path.join(base, 'restored-broken');
    const input = new Readable({ read() {} });
    input.push(data.subarray(0, 1000));
    setTimeout(() => input.destroy(new LifeboatError('integrity', 'chunk 1234 does not match its id')), 20);
    const err = await rejection(source.restore(input, { kind: 'dir', path: target, force: false }, { preserveOwner: false, artifact: artifact('mongodb') }, fakeJobContext().ctx));
    expect(err.code).toBe('integrity');
    expect(fs.readdirSync(target)).toEqual([]);
  });

  it('never takes a file name from the store that is not a plain name', async () => {
    const target = path.join(base, 'restored-odd');
    await source.restore(Readable.from([data]), { kind: 'dir', path: target, force: false }, { preserveOwner: false, artifact: artifact('../../etc/cron.d/x') }, fakeJobContext().ctx);
    expect(fs.readdirSync(target)).toEqual(['command.out']);
  });
});

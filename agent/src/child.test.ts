import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { LifeboatError } from '@lifeboat/shared';
import { childEnv, runChild, streamChild, STDERR_TAIL_BYTES, TailBuffer, type ChildOptions } from './child.js';
import { collect, rejection } from './sources/test-context.suite.js';
import { processAlive } from './scratch/common.js';

const sh = (script: string, extra: Partial<ChildOptions> = {}): ChildOptions => ({ tool: 'test-tool', program: 'sh', args: ['-c', script], ...extra });




/** Pids a test started that must be gone by its end. */
const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
});

describe('runChild', () => {
  it('returns stdout and the stderr of a successful run', async () => {
    const result = await runChild(sh('printf "one\\ntwo"; echo "a warning" >&2'));
    expect(result).toEqual({ exitCode: 0, stdout: 'one\ntwo', stderr: 'a warning' });
  });

  it('fails on a non-zero exit code with the tool name, the code and its stderr', async () => {
    const err = await rejection(runChild(sh('echo "something broke" >&2; exit 3')));
    expect(err.code).toBe('source_failed');
    expect(err.message).toBe('test-tool failed (exit code 3): something broke');
  });

  it('uses the failure code it is given (restores fail as restore_failed)', async () => {
    const err = await rejection(runChild(sh('exit 1', { failureCode: 'restore_failed' })));
    expect(err.code).toBe('restore_failed');
    expect(err.message).toBe('test-tool failed (exit code 1) (it printed no error message)');
  });

  it('fails when the child is killed by a signal', async () => {
    const err = await rejection(runChild(sh('echo dying >&2; kill -KILL $$')));
    expect(err.message).toBe('test-tool was killed by SIGKILL: dying');
  });

  it('names only the program when it cannot be started, never its arguments', async () => {
    const err = await rejection(runChild({ tool: 'dumper', program: '/nonexistent/dumper', args: ['--password=hunter2'] }));
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(/^dumper could not be started: program "dumper" was not found/);
    expect(err.message).not.toContain('hunter2');
  });

  it('refuses more output than it may hold', async () => {
    const err = await rejection(runChild({ ...sh('head -c 100000 /dev/zero'), maxOutputBytes: 1000 }));
    expect(err.message).toMatch(/printed more than 1000 B/);
  });

  it('redacts secrets in stderr and keeps only its tail', async () => {
    const err = await rejection(runChild(sh('head -c 20000 /dev/zero | tr "\\0" x; echo; echo "login failed: password=hunter2" >&2; exit 1')));
    expect(err.message).toContain('password=***');
    expect(err.message).not.toContain('hunter2');
    const long = await rejection(runChild(sh('i=0; while [ $i -lt 2000 ]; do echo "line $i of noise" >&2; i=$((i+1)); done; echo "the real reason" >&2; exit 2')));
    expect(long.message.length).toBeLessThan(STDERR_TAIL_BYTES + 100);
    expect(long.message).toMatch(/: …line \d+ of noise\n/);
    expect(long.message.endsWith('the real reason')).toBe(true);
  });

  it('feeds its input to the child', async () => {
    const result = await runChild({ tool: 'cat', program: 'cat', args: [], input: Readable.from([Buffer.from('select 1;\n'), Buffer.from('select 2;\n')]) });
    expect(result.stdout).toBe('select 1;\nselect 2;\n');
  });

  it('fails a child that exits with success without taking all of its input', async () => {
    const input = Readable.from((function* () {
      for (let i = 0; i < 64; i++) yield Buffer.alloc(64 * 1024, 1);
    })());
    const err = await rejection(runChild({ tool: 'true', program: 'true', args: [], input }));
    expect(err.message).toMatch(/^true exited before reading all of its input/);
  });

  it('stops the child when its input breaks, with the input\'s error', async () => {
    const input = new Readable({ read() {} });
    input.push('partial');
    setTimeout(() => input.destroy(new LifeboatError('integrity', 'chunk abc failed its check')), 50);
    const err = await rejection(runChild({ tool: 'cat', program: 'cat', args: [], input, killGraceMs: 200 }));
    expect(err.code).toBe('integrity');
    expect(err.message).toBe('chunk abc failed its check');
  });
});

describe('stopping a child', () => {
  it('times out, stopping the whole process group (a shell and its children)', async () => {
    const startedAt = Date.now();
    const out = streamChild({ ...sh('echo $$; sleep 30; echo never'), timeoutMs: 300 });
    const stream = collect(out.stream).catch(() => Buffer.alloc(0));
    const err = await rejection(out.done);
    expect(err.code).toBe('source_failed');
    expect(err.message).toMatch(/^test-tool timed out after 300ms and was stopped/);
    // SIGTERM reached sleep too: nothing held the pipe open until the grace period ran out.
    expect(Date.now() - startedAt).toBeLessThan(3000);
    await stream;
  });

  it('escalates to SIGKILL when the child ignores SIGTERM', async () => {
    const startedAt = Date.now();
    const err = await rejection(runChild({ ...sh('trap "" TERM; sleep 30'), timeoutMs: 200, killGraceMs: 300 }));
    expect(err.message).toMatch(/timed out/);
    const elapsed = Date.now() - startedAt;
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(3000);
  });

  it('stops on abort and rejects with the abort reason', async () => {
    const controller = new AbortController();
    const run = runChild({ ...sh('sleep 30'), signal: controller.signal });
    setTimeout(() => controller.abort(new LifeboatError('cancelled', 'cancelled by admin')), 100);
    const err = await rejection(run);
    expect(err.code).toBe('cancelled');
    expect(err.message).toBe('cancelled by admin');
  });

  it('does not start at all when the signal is already aborted', async () => {
    const controller = new AbortController();
    controller.abort('the job timed out');
    const out = streamChild({ ...sh('echo started > /dev/stderr'), signal: controller.signal });
    const err = await rejection(out.done);
    expect(err.code).toBe('cancelled');
    expect(err.message).toBe('the job timed out');
    await expect(collect(out.stream)).rejects.toBe(err);
  });

  it('abandons pipes still held by a process outside its group after SIGKILL', async () => {
    // setsid puts the sleeper in a session of its own: no signal to our group reaches it.
    const out = streamChild({ ...sh('echo x; setsid sleep 30 & echo $!; sleep 30'), timeoutMs: 100, killGraceMs: 150 });
    const reader = collect(out.stream).catch(() => Buffer.alloc(0));
    const err = await rejection(out.done);
    expect(err.message).toMatch(/timed out/);
    const pids = (await reader).toString().split('\n').filter((line) => /^\d+$/.test(line));
    started.push(...pids.map(Number));
  });
});

describe('streamChild', () => {
  it('streams stdout and ends only after the child succeeded', async () => {
    let reported = 0;
    const out = streamChild({ ...sh('head -c 3000000 /dev/zero'), onBytes: (total) => (reported = total) });
    const data = await collect(out.stream);
    expect(data.length).toBe(3_000_000);
    expect(await out.done).toEqual({ exitCode: 0, stderr: '', bytes: 3_000_000 });
    expect(reported).toBe(3_000_000);
  });

  it('errors the stream when the child fails after writing output', async () => {
    const out = streamChild(sh('printf partial; echo "disk full" >&2; exit 5'));
    const streamError = await collect(out.stream).then(
      () => null,
      (e: unknown) => e,
    );
    const err = await rejection(out.done);
    expect(streamError).toBe(err);
    expect(err.message).toBe('test-tool failed (exit code 5): disk full');
  });

  it('fails on zero bytes of output, unless allowed', async () => {
    const out = streamChild(sh('echo "nothing to dump" >&2'));
    void collect(out.stream).catch(() => {});
    const err = await rejection(out.done);
    expect(err.message).toBe('test-tool produced no output: nothing to dump');
    const allowed = streamChild({ ...sh('true'), allowEmpty: true });
    expect((await collect(allowed.stream)).length).toBe(0);
    expect((await allowed.done).bytes).toBe(0);
  });

  it('stops the child when the consumer closes the output early', async () => {
    const out = streamChild({ ...sh('echo $$; trap "" PIPE; while true; do echo data; done'), killGraceMs: 300 });
    const iterator = (out.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const first = await iterator.next();
    const pid = Number(String(first.value).split('\n')[0]);
    try {
      expect(processAlive(pid)).toBe(true);
      out.stream.destroy();
      const err = await rejection(out.done);
      expect(err.message).toBe('the output of test-tool was closed before test-tool finished');
      expect(processAlive(pid)).toBe(false);
    } finally {
      // An endless loop must not outlive a failed assertion.
      if (processAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  it('keeps the backpressure: a child ahead of its reader waits', async () => {
    const out = streamChild(sh('head -c 50000000 /dev/zero'));
    await new Promise((r) => setTimeout(r, 300));
    // Nothing read: at most the pipe and our buffers hold output, not the whole 50 MB.
    expect(out.stream.readableLength).toBeLessThanOrEqual(2 * 1024 * 1024);
    expect((await collect(out.stream)).length).toBe(50_000_000);
    await out.done;
  });
});

describe('childEnv', () => {
  it('passes only harmless variables, strips named ones, adds what it is given', () => {
    const env = childEnv({
      from: { PATH: '/bin', HOME: '/root', LANG: 'C.UTF-8', LC_ALL: 'C', PGPASSWORD: 'x', MYSQL_PWD: 'y', AWS_SECRET_ACCESS_KEY: 'z', LIFEBOAT_TOKEN: 't', DB_PASS: 'p' },
      strip: ['LANG'],
      set: { PGPASSFILE: '/tmp/x/pgpass' },
    });
    expect(env).toEqual({ PATH: '/bin', HOME: '/root', LC_ALL: 'C', PGPASSFILE: '/tmp/x/pgpass' });
  });

  it('gives a PATH when the agent has none', () => {
    expect(childEnv({ from: {} }).PATH).toMatch(/\/usr\/bin/);
  });

  it('is what a child sees by default: the agent\'s secrets never reach it', async () => {
    process.env.LIFEBOAT_CHILD_TEST_SECRET = 'hunter2';
    try {
      const { stdout } = await runChild(sh('env'));
      expect(stdout).not.toContain('hunter2');
      expect(stdout).toMatch(/^PATH=/m);
    } finally {
      delete process.env.LIFEBOAT_CHILD_TEST_SECRET;
    }
  });
});

describe('TailBuffer', () => {
  it('keeps the last bytes and marks the cut at a line boundary', () => {
    const tail = new TailBuffer(16);
    tail.push(Buffer.from('first line\nsecond\n'));
    tail.push(Buffer.from('third\n'));
    expect(tail.text()).toBe('…second\nthird');
  });

  it('drops control characters but keeps lines', () => {
    const tail = new TailBuffer(100);
    tail.push(Buffer.from('\x1b[31merror\x1b[0m\r\nnext\ttab\n'));
    expect(tail.text()).toBe('[31merror[0m\nnext\ttab');
  });
});

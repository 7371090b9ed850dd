import { closeSync, constants, fchownSync, futimesSync, openSync, writeSync } from 'node:fs';
import { workerData, type MessagePort } from 'node:worker_threads';

/**
 * A restore's file writer thread (file-writers.ts): creates and writes the regular files it is given, each
 * whole, in order. Creating a file costs the kernel 25 to 500 µs of CPU on our VMs (it depends on what the disk
 * did before), most of a restore of many small files: done here, it no longer holds up the restore's thread.
 */
export interface WriteFilesTask {
  files: FileToWrite[];
  /** The files' contents, back to back (each at its offset). */
  data: Uint8Array;
}

export interface FileToWrite {
  /** Absolute; its directory exists (the restore made it), and nothing is at the path itself. */
  path: string;
  mode: number;
  /** Where its bytes lie in the task's data. */
  offset: number;
  length: number;
  /**
   * Where in the file they go. A large file comes in parts, in order, across tasks: the part at 0 creates the
   * file, the others write further into it, and the `final` one also sets its times and owner.
   */
  position: number;
  final: boolean;
  /** Milliseconds since the epoch, or null to leave the times alone. */
  atimeMs: number | null;
  mtimeMs: number | null;
  /** Owner to set, or null to leave it (not root, or owners not preserved). */
  uid: number | null;
  gid: number | null;
}

export interface WriteFilesResult {
  /** The first failure of the task; the files after it in the task are not written. */
  error?: { path: string; code: string | null; message: string };
  /** The task's buffer, given back for a later batch. */
  data?: ArrayBuffer;
}

export interface WriterData {
  /** Where results go (read synchronously by the restore's thread). */
  results: MessagePort;
  /** [0]: tasks given and not finished, decremented and notified here after each task. */
  state: Int32Array;
}

/** Never through a symlink, and never anything but a fresh or truncated regular file. */
const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
/** A later part of a file its first part created. */
const CONTINUE = constants.O_WRONLY | constants.O_NOFOLLOW;

const { results, state } = workerData as WriterData;
results.on('message', (task: WriteFilesTask) => {
  let result: WriteFilesResult = {};
  try {
    for (const file of task.files) {
      const failure = writeFile(file, task.data);
      if (failure) {
        result = { error: failure };
        break;
      }
    }
  } finally {
    const data = task.data.buffer as ArrayBuffer;
    results.postMessage({ ...result, data }, [data]);
    Atomics.sub(state, 0, 1);
    Atomics.notify(state, 0);
  }
});

function writeFile(file: FileToWrite, data: Uint8Array): WriteFilesResult['error'] | null {
  let fd: number | null = null;
  try {
    fd = file.position === 0 ? openSync(file.path, CREATE, file.mode) : openSync(file.path, CONTINUE);
    for (let at = 0; at < file.length; ) at += writeSync(fd, data, file.offset + at, file.length - at, file.position + at);
    if (file.final && file.mtimeMs !== null) futimesSync(fd, exactSeconds(file.atimeMs ?? file.mtimeMs), exactSeconds(file.mtimeMs));
    if (file.final && file.uid !== null && file.gid !== null) fchownSync(fd, file.uid, file.gid);
    closeSync(fd);
    fd = null;
    return null;
  } catch (err) {
    if (fd !== null) closeSync(fd);
    const code = (err as NodeJS.ErrnoException).code ?? null;
    return { path: file.path, code, message: (err as Error).message };
  }
}

/**
 * Seconds for futimes that land on the exact millisecond: libuv turns seconds (a double) into whole
 * microseconds by truncation, so 1600000000.123 would become .122999; half a microsecond more cannot.
 */
function exactSeconds(ms: number): number {
  return ms / 1000 + 5e-7;
}

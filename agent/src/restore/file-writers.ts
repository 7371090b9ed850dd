import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import type { FileToWrite, WriteFilesResult, WriteFilesTask, WriterData } from './file-writer-worker.js';

/** A batch of small files is handed to a writer thread once it holds this many bytes or files. */
const BATCH_BYTES = 256 * 1024;
const BATCH_FILES = 64;
/** Batches given to the writers and not yet written: bounds the memory of a restore that outruns its disk. */
const MAX_BATCHES_IN_FLIGHT = 4;
/** Paths handed out since the last barrier, remembered to order a later entry at one of them: a barrier past this many. */
const MAX_REMEMBERED_PATHS = 4096;
/**
 * Files up to this size are handed whole, in one batch; larger ones stream through in parts of a batch each
 * (never held whole), which the writer thread writes in order.
 */
const LARGEST_WHOLE_FILE = BATCH_BYTES;

export interface FileToHand {
  path: string;
  mode: number;
  size: number;
  atimeMs: number | null;
  mtimeMs: number | null;
  uid: number | null;
  gid: number | null;
}

/** A file being handed over: its bytes are copied in as they arrive, then `end` queues it. */
export interface HandedFile {
  write(piece: Uint8Array): void;
  end(): void;
}

/** Files being gathered for one writer task: their places in `data`, of which `used` bytes are filled. */
interface Batch {
  files: FileToWrite[];
  data: Buffer;
  used: number;
}

/**
 * Writer threads that create a restore's regular files, so file creation (kernel work that dominates a restore
 * of many small files) runs beside the restore's own thread instead of inside it. The restore's thread stays
 * the one that decides: it checks each entry, makes the directories, and hands each regular file, contents
 * copied, to the writers in batches (a large file in parts, a batch at a time).
 *
 * Everything stays synchronous, as node-tar's UnpackSync is: an entry that could depend on a file not yet
 * written (a link, a path given twice, an entry under a path handed out as a file) first waits, blocking, until
 * every handed file is written (`barrier`). A writer's failure (a full disk, a refused permission) is reported
 * by the next call here, with the file's path.
 */
export class FileWriters {
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  private readonly state = new Int32Array(new SharedArrayBuffer(4));
  private next = 0;
  /** While a large file is handed in parts: the writer all its batches go to, so its parts are written in order. */
  private pinned: { writer: number; untilDispatched: boolean } | null = null;
  private batch: Batch | null = null;
  /** Paths handed out since the last barrier, and the directories above them. */
  private readonly handed = new Set<string>();
  private readonly handedDirs = new Set<string>();
  /** Batch buffers the writers gave back, for the next batches (fresh ones would cost page faults each time). */
  private readonly spare: ArrayBuffer[] = [];
  private failure: Error | null = null;
  /** Bytes handed files lacked at their end (a truncated archive, or a bug): the restore must not count them whole. */
  shortBytes = 0;
  shortFile: string | null = null;

  private constructor(size: number, url: URL) {
    for (let i = 0; i < size; i++) {
      const { port1, port2 } = new MessageChannel();
      const data: WriterData = { results: port2, state: this.state };
      const worker = new Worker(url, { workerData: data, transferList: [port2], resourceLimits: { maxYoungGenerationSizeMb: 1 } });
      worker.on('error', (err) => (this.failure ??= new Error(`a file writer thread stopped: ${err.message}`)));
      this.workers.push(worker);
      this.ports.push(port1);
    }
  }

  /**
   * Writer threads, or null where there are none to start (LIFEBOAT_RESTORE_WRITERS=0, or nothing built):
   * node-tar writes every file then. One by default: it takes file creation off the restore's thread, and on our
   * 2-core VMs a second one gained nothing measurable for 9 MiB more memory (each thread is a V8 isolate).
   * The sources run unbuilt (unit tests) start the built worker: it imports only Node's own modules, so it is
   * the same code either way.
   */
  static create(size = Number(process.env.LIFEBOAT_RESTORE_WRITERS ?? 1)): FileWriters | null {
    if (!(size > 0)) return null;
    const url = [new URL('./file-writer-worker.js', import.meta.url), new URL('../../dist/restore/file-writer-worker.js', import.meta.url)].find((u) => existsSync(fileURLToPath(u)));
    return url ? new FileWriters(size, url) : null;
  }

  /**
   * Called for every entry before anything is done at its path: waits for the writers first when the entry
   * could depend on a handed file. A regular file or a directory depends only on its own path and those above
   * it; anything else (a link, which names another entry; a symlink, which redirects later paths) waits always.
   */
  before(entryPath: string, kind: 'file' | 'directory' | 'other'): void {
    this.check();
    if (this.handed.size === 0) return;
    if (kind === 'other' || this.handed.size >= MAX_REMEMBERED_PATHS || this.handedDirs.has(entryPath) || this.touchesHanded(entryPath)) this.barrier();
  }

  /** Hands a file to the writers: its bytes follow through the returned handle. */
  hand(file: FileToHand): HandedFile {
    if (file.size > LARGEST_WHOLE_FILE) return this.handInParts(file);
    const batch = this.batchWithRoom(file.size);
    const offset = batch.used;
    batch.used += file.size;
    let written = 0;
    this.remember(file.path);
    return {
      write: (piece) => {
        // node-tar gives exactly `size` bytes; more would overrun the next file's place.
        const room = file.size - written;
        batch.data.set(piece.length > room ? piece.subarray(0, room) : piece, offset + written);
        written += Math.min(piece.length, room);
      },
      end: () => {
        const { path: filePath, mode, atimeMs, mtimeMs, uid, gid } = file;
        // A file cut short (a truncated archive) keeps what arrived, as node-tar would have written it.
        this.noteShort(filePath, file.size - written);
        batch.files.push({ path: filePath, mode, offset, length: written, position: 0, final: true, atimeMs, mtimeMs, uid, gid });
        this.dispatchIfFull();
      },
    };
  }

  /**
   * A large file, streamed: its bytes fill batches as they come, one part of the file per batch. Nothing else
   * is handed meanwhile (node-tar gives one entry at a time); its batches all go to one writer, which writes
   * them in order.
   */
  private handInParts(file: FileToHand): HandedFile {
    this.remember(file.path);
    this.pinned = { writer: this.next++ % this.ports.length, untilDispatched: false };
    let position = 0;
    let part: FileToWrite | null = null;
    const { path: filePath, mode, atimeMs, mtimeMs, uid, gid } = file;
    const newPart = (): FileToWrite => {
      const batch = this.batchWithRoom(1);
      const made: FileToWrite = { path: filePath, mode, offset: batch.used, length: 0, position, final: false, atimeMs, mtimeMs, uid, gid };
      batch.files.push(made);
      return made;
    };
    return {
      write: (piece) => {
        // node-tar gives exactly `size` bytes; more are dropped, as hand() does.
        let rest = piece.subarray(0, Math.max(0, file.size - position));
        while (rest.length > 0) {
          part ??= newPart();
          const batch = this.batch!;
          const n = Math.min(rest.length, batch.data.length - batch.used);
          batch.data.set(rest.subarray(0, n), batch.used);
          batch.used += n;
          part.length += n;
          position += n;
          rest = rest.subarray(n);
          if (batch.used >= batch.data.length) {
            this.dispatch();
            part = null;
          }
        }
      },
      end: () => {
        // A file cut short (a truncated archive) keeps what arrived; an empty last part still sets times and owner.
        this.noteShort(filePath, file.size - position);
        (part ?? newPart()).final = true;
        this.pinned!.untilDispatched = true;
        this.dispatchIfFull();
      },
    };
  }

  private noteShort(filePath: string, missing: number): void {
    if (missing <= 0) return;
    this.shortBytes += missing;
    this.shortFile ??= filePath;
  }

  /** The batch being filled, dispatched first and started anew when it lacks `bytes` of room or a place for a file. */
  private batchWithRoom(bytes: number): Batch {
    if (this.batch && (this.batch.used + bytes > this.batch.data.length || this.batch.files.length >= BATCH_FILES)) this.dispatch();
    this.batch ??= { files: [], data: this.batchBuffer(), used: 0 };
    return this.batch;
  }

  /** Sends the batch being filled once it holds a batch's worth of bytes or files. */
  private dispatchIfFull(): void {
    if (this.batch && (this.batch.used >= BATCH_BYTES || this.batch.files.length >= BATCH_FILES)) this.dispatch();
  }

  /** A path handed out, and the directories above it: a later entry at one of them waits for the writers. */
  private remember(filePath: string): void {
    this.handed.add(filePath);
    for (let dir = path.posix.dirname(filePath); dir.length > 1 && !this.handedDirs.has(dir); dir = path.posix.dirname(dir)) this.handedDirs.add(dir);
  }

  /** Waits until every handed file is written; throws the first failure. */
  barrier(): void {
    this.dispatch();
    while (Atomics.load(this.state, 0) > 0) {
      Atomics.wait(this.state, 0, Atomics.load(this.state, 0), 1000);
      this.collect();
    }
    this.collect();
    this.handed.clear();
    this.handedDirs.clear();
    this.check();
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    for (const port of this.ports) port.close();
  }

  private dispatch(): void {
    const batch = this.batch;
    this.batch = null;
    if (!batch || batch.files.length === 0) return;
    // Backpressure: a restore outrunning its disk waits here instead of filling memory with batches.
    while (Atomics.load(this.state, 0) >= MAX_BATCHES_IN_FLIGHT) {
      Atomics.wait(this.state, 0, Atomics.load(this.state, 0), 1000);
      this.collect();
    }
    this.check();
    const task: WriteFilesTask = { files: batch.files, data: new Uint8Array(batch.data.buffer, 0, batch.used) };
    Atomics.add(this.state, 0, 1);
    const writer = this.pinned ? this.pinned.writer : this.next++ % this.ports.length;
    if (this.pinned?.untilDispatched) this.pinned = null;
    this.ports[writer]!.postMessage(task, [batch.data.buffer as ArrayBuffer]);
  }

  private batchBuffer(): Buffer {
    this.collect();
    const spare = this.spare.pop();
    return spare ? Buffer.from(spare) : Buffer.allocUnsafeSlow(BATCH_BYTES);
  }

  /** Reads the writers' results (synchronously), keeping the first failure. */
  private collect(): void {
    for (const port of this.ports) {
      for (let message = receiveMessageOnPort(port); message; message = receiveMessageOnPort(port)) {
        const { error, data } = message.message as WriteFilesResult;
        if (data?.byteLength === BATCH_BYTES && this.spare.length < MAX_BATCHES_IN_FLIGHT + 1) this.spare.push(data);
        if (error && !this.failure) this.failure = Object.assign(new Error(`cannot write ${error.path}: ${error.message}`), { code: error.code, path: error.path });
      }
    }
  }

  private check(): void {
    this.collect();
    if (this.failure) throw this.failure;
  }

  /** Whether the path, or a directory above it, was handed out as a file since the last barrier. */
  private touchesHanded(entryPath: string): boolean {
    for (let p = entryPath; p.length > 1; p = path.posix.dirname(p)) if (this.handed.has(p)) return true;
    return false;
  }
}

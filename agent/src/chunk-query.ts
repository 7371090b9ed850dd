import { LifeboatError, MAX_CHUNK_QUERY, newTransferId } from '@lifeboat/shared';
import type { ServerLink } from './link.js';

/**
 * Asks the server which of these chunks its store lacks, in batches. The server keeps the others from garbage
 * collection until the job ends, so a backup can reuse them without sending (or even reading) their bytes.
 */
export async function absentChunks(link: ServerLink, jobId: string, ids: readonly string[], signal: AbortSignal): Promise<Set<string>> {
  const absent = new Set<string>();
  for (let at = 0; at < ids.length; at += MAX_CHUNK_QUERY) {
    const chunkIds = ids.slice(at, at + MAX_CHUNK_QUERY);
    const queryId = newTransferId();
    const answer = await new Promise<string[]>((resolve, reject) => {
      const onAbort = () => {
        unsubscribe();
        reject(signal.reason instanceof LifeboatError ? signal.reason : new LifeboatError('cancelled', 'the job was cancelled'));
      };
      const unsubscribe = link.subscribe(queryId, {
        onMessage(msg) {
          if (msg.type !== 'chunks.absent') return;
          unsubscribe();
          signal.removeEventListener('abort', onAbort);
          resolve(msg.payload.chunkIds);
        },
      });
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      link.send('chunks.query', { jobId, queryId, chunkIds });
    });
    for (const id of answer) absent.add(id);
  }
  return absent;
}

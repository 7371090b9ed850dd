import { chunkKey, describeError, packKey, type Logger, type StoreBackend } from '@lifeboat/shared';
import type { Catalog } from '../catalog/catalog.js';
import { ChunkStore } from '../store/chunks.js';

/** Referenced chunks read from the catalog at once. */
const VERIFY_PAGE = 1000;

export interface ChunkProblem {
  chunkId: string;
  problem: string;
  /** Every snapshot this chunk breaks. */
  snapshots: string[];
}

export interface VerifyReport {
  snapshots: number;
  chunks: number;
  readData: boolean;
  problems: ChunkProblem[];
  /** Snapshots now marked damaged in the catalog. */
  damaged: string[];
}

/**
 * Checks that every chunk each snapshot references exists — and with `readData`, that its content matches its
 * id (fully for unencrypted chunks; header and length for encrypted ones, whose key the server never holds).
 * A damaged chunk is copied to quarantine/ (evidence) and dropped from the index, so it is never again a
 * deduplication base: the next backup that needs it uploads it anew. Every snapshot it breaks is marked damaged.
 */
export async function verifyStore(
  catalog: Catalog,
  backend: StoreBackend,
  options: { planId?: string; readData: boolean; log: Logger; pageSize?: number },
): Promise<VerifyReport> {
  const store = new ChunkStore(backend, catalog);
  const packPresent = new Map<string, Promise<boolean>>();
  const present = async (id: string): Promise<boolean> => {
    const at = catalog.chunkLocation(id);
    if (!at) return false;
    if (!packPresent.has(at.pack)) packPresent.set(at.pack, backend.has(packKey(at.pack)));
    return packPresent.get(at.pack)!;
  };
  const snapshots = catalog.countSnapshots(options.planId);
  const problems: { chunkId: string; problem: string }[] = [];
  let checked = 0;
  // The referenced chunks a page at a time (in id order): memory holds one page, however large the store.
  for (let after = ''; ; ) {
    const page = catalog.referencedChunksPage({ ...(options.planId ? { planId: options.planId } : {}), afterId: after, limit: options.pageSize ?? VERIFY_PAGE });
    if (page.length === 0) break;
    for (const { id, size } of page) {
      checked++;
      try {
        if (options.readData) await store.get(id, size);
        else if (!(await present(id))) problems.push({ chunkId: id, problem: 'missing from the store' });
      } catch (err) {
        const { code, message } = describeError(err);
        problems.push({ chunkId: id, problem: code === 'not_found' ? 'missing from the store' : message });
        if (code !== 'not_found') await quarantine(catalog, backend, id, options.log);
      }
    }
    after = page[page.length - 1]!.id;
  }
  const referencing = catalog.snapshotsReferencing(problems.map((p) => p.chunkId));
  const report: VerifyReport = {
    snapshots,
    chunks: checked,
    readData: options.readData,
    problems: problems.map((p) => ({ ...p, snapshots: referencing.get(p.chunkId) ?? [] })),
    damaged: [],
  };
  const damaged = new Set(report.problems.flatMap((p) => p.snapshots));
  for (const snapshotId of damaged) {
    const reasons = report.problems.filter((p) => p.snapshots.includes(snapshotId)).map((p) => `chunk ${p.chunkId}: ${p.problem}`);
    catalog.markDamaged([snapshotId], reasons.join('; '));
    options.log.error('snapshot damaged', { snapshot: snapshotId, reason: reasons[0], more: reasons.length - 1 || undefined });
  }
  report.damaged = [...damaged];
  return report;
}

async function quarantine(catalog: Catalog, backend: StoreBackend, id: string, log: Logger): Promise<void> {
  const at = catalog.chunkLocation(id);
  if (!at) return;
  try {
    catalog.deleteChunkRows([id]);
    await backend.put(`quarantine/${chunkKey(id)}`, await backend.getRange(packKey(at.pack), at.offset, at.length));
    log.warn('damaged chunk quarantined and dropped from the index', { chunk: id, pack: at.pack });
  } catch (err) {
    log.error('could not quarantine a damaged chunk', { chunk: id, error: describeError(err).message });
  }
}

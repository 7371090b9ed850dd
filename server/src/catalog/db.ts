import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { fileURLToPath } from 'node:url';
import * as schema from './schema.js';

export type CatalogDb = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

/** Migrations are checked in (server/drizzle) and applied on every start; the same path from src/ and dist/. */
const MIGRATIONS = fileURLToPath(new URL('../../drizzle', import.meta.url));

export function openCatalogDb(file: string): CatalogDb {
  return catalogDbOn(new Database(file));
}

/** The catalog on a connection opened elsewhere (rebuild-catalog opens the old catalog under an exclusive lock). */
export function catalogDbOn(sqlite: Database.Database): CatalogDb {
  // DESIGN §11: WAL with synchronous=FULL, so a committed catalog row survives power loss.
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = FULL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder: MIGRATIONS });
  return db as CatalogDb;
}

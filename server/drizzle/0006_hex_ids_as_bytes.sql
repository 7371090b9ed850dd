-- Chunk and pack ids kept as their bytes (schema.ts hexId): a new chunk's id is held four times (chunks and
-- chunk_numbers, a row and an index each), 64 characters each time: 436 bytes of catalog per new chunk (with
-- its place in a chunk list) before, 260 after (server/src/catalog/chunk-lists.test.ts). The columns stay
-- declared text: SQLite keeps a blob as given in any column.
-- unhex() of anything that is not hex is NULL, which NOT NULL refuses: a damaged id stops the migration.
UPDATE `chunk_numbers` SET `id` = unhex(`id`) WHERE typeof(`id`) = 'text';--> statement-breakpoint
UPDATE `chunks` SET `id` = unhex(`id`), `pack_id` = unhex(`pack_id`) WHERE typeof(`id`) = 'text';--> statement-breakpoint
UPDATE `packs` SET `id` = unhex(`id`) WHERE typeof(`id`) = 'text';

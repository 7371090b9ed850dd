-- Chunk lists by number (schema.ts chunkNumbers): each row of a list held the 64-character chunk id and the
-- artifact's 36-character id, about 260 bytes per chunk per snapshot with the indexes; now about 35.
CREATE TABLE `chunk_numbers` (
	`num` integer PRIMARY KEY NOT NULL,
	`id` text NOT NULL
);--> statement-breakpoint
CREATE UNIQUE INDEX `chunk_numbers_id` ON `chunk_numbers` (`id`);--> statement-breakpoint
INSERT INTO `chunk_numbers` (`id`) SELECT DISTINCT `chunk_id` FROM `artifact_chunks` ORDER BY `chunk_id`;--> statement-breakpoint
ALTER TABLE `artifacts` ADD `chunk_list` integer;--> statement-breakpoint
UPDATE `artifacts` SET `chunk_list` = `rowid`;--> statement-breakpoint
CREATE UNIQUE INDEX `artifacts_chunk_list` ON `artifacts` (`chunk_list`);--> statement-breakpoint
CREATE TABLE `artifact_chunks_by_number` (
	`list` integer NOT NULL REFERENCES `artifacts`(`chunk_list`) ON DELETE cascade,
	`seq` integer NOT NULL,
	`chunk` integer NOT NULL REFERENCES `chunk_numbers`(`num`),
	`size` integer NOT NULL,
	`slice_offset` integer,
	`slice_length` integer,
	PRIMARY KEY(`list`, `seq`)
) WITHOUT ROWID;--> statement-breakpoint
INSERT INTO `artifact_chunks_by_number` (`list`, `seq`, `chunk`, `size`, `slice_offset`, `slice_length`)
	SELECT a.`chunk_list`, ac.`seq`, n.`num`, ac.`size`, ac.`slice_offset`, ac.`slice_length`
	FROM `artifact_chunks` ac
	JOIN `artifacts` a ON a.`id` = ac.`artifact_id`
	JOIN `chunk_numbers` n ON n.`id` = ac.`chunk_id`;--> statement-breakpoint
DROP TABLE `artifact_chunks`;--> statement-breakpoint
ALTER TABLE `artifact_chunks_by_number` RENAME TO `artifact_chunks`;--> statement-breakpoint
CREATE INDEX `artifact_chunks_chunk` ON `artifact_chunks` (`chunk`);

CREATE TABLE `packs` (
	`id` text PRIMARY KEY NOT NULL,
	`size` integer NOT NULL,
	`chunk_count` integer NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
DROP TABLE `chunks`;--> statement-breakpoint
CREATE TABLE `chunks` (
	`id` text PRIMARY KEY NOT NULL,
	`pack_id` text NOT NULL,
	`pack_offset` integer NOT NULL,
	`stored_size` integer NOT NULL,
	`plain_size` integer NOT NULL,
	`created_at` integer NOT NULL,
	`last_used_at` integer
);
--> statement-breakpoint
CREATE INDEX `chunks_pack` ON `chunks` (`pack_id`);

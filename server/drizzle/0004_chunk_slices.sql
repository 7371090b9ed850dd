ALTER TABLE `artifact_chunks` ADD `slice_offset` integer;--> statement-breakpoint
ALTER TABLE `artifact_chunks` ADD `slice_length` integer;
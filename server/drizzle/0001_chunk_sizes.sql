CREATE TABLE `chunks` (
	`id` text PRIMARY KEY NOT NULL,
	`stored_size` integer NOT NULL,
	`plain_size` integer NOT NULL,
	`created_at` integer NOT NULL
);

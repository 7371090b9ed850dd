CREATE TABLE `drills` (
	`id` text PRIMARY KEY NOT NULL,
	`plan_id` text NOT NULL,
	`snapshot_id` text NOT NULL,
	`agent_id` text,
	`job_id` text,
	`status` text NOT NULL,
	`trigger` text NOT NULL,
	`created_at` integer NOT NULL,
	`started_at` integer,
	`finished_at` integer,
	`restore_ms` integer,
	`bytes_restored` integer,
	`checks` text NOT NULL,
	`error` text
);
--> statement-breakpoint
CREATE INDEX `drills_plan` ON `drills` (`plan_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `drills_snapshot` ON `drills` (`snapshot_id`);--> statement-breakpoint
ALTER TABLE `chunks` ADD `last_used_at` integer;--> statement-breakpoint
ALTER TABLE `snapshots` ADD `damaged_reason` text;
CREATE TABLE `agents` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`labels` text NOT NULL,
	`secret_hash` text NOT NULL,
	`created_at` integer NOT NULL,
	`last_seen_at` integer,
	`revoked_at` integer,
	`hostname` text,
	`version` text,
	`tools` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `agents_name` ON `agents` (`name`);--> statement-breakpoint
CREATE TABLE `artifact_chunks` (
	`artifact_id` text NOT NULL,
	`seq` integer NOT NULL,
	`chunk_id` text NOT NULL,
	`size` integer NOT NULL,
	PRIMARY KEY(`artifact_id`, `seq`),
	FOREIGN KEY (`artifact_id`) REFERENCES `artifacts`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `artifact_chunks_chunk` ON `artifact_chunks` (`chunk_id`);--> statement-breakpoint
CREATE TABLE `artifacts` (
	`id` text PRIMARY KEY NOT NULL,
	`snapshot_id` text NOT NULL,
	`step` integer NOT NULL,
	`kind` text NOT NULL,
	`name` text NOT NULL,
	`size` integer NOT NULL,
	`sha256` text NOT NULL,
	`chunk_count` integer NOT NULL,
	`metadata` text NOT NULL,
	FOREIGN KEY (`snapshot_id`) REFERENCES `snapshots`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `artifacts_snapshot` ON `artifacts` (`snapshot_id`);--> statement-breakpoint
CREATE TABLE `enrollment_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`token_hash` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`used_at` integer,
	`used_by_agent_id` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `enrollment_tokens_hash` ON `enrollment_tokens` (`token_hash`);--> statement-breakpoint
CREATE TABLE `jobs` (
	`id` text PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`plan_id` text,
	`agent_id` text NOT NULL,
	`status` text NOT NULL,
	`trigger` text NOT NULL,
	`params` text,
	`created_at` integer NOT NULL,
	`dispatched_at` integer,
	`started_at` integer,
	`finished_at` integer,
	`error_code` text,
	`error_message` text,
	`warnings` text NOT NULL,
	`progress` text,
	`snapshot_id` text,
	`summary` text
);
--> statement-breakpoint
CREATE INDEX `jobs_plan_status` ON `jobs` (`plan_id`,`status`);--> statement-breakpoint
CREATE INDEX `jobs_agent_status` ON `jobs` (`agent_id`,`status`);--> statement-breakpoint
CREATE TABLE `plans` (
	`id` text PRIMARY KEY NOT NULL,
	`agent_name` text NOT NULL,
	`body` text NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `snapshots` (
	`id` text PRIMARY KEY NOT NULL,
	`plan_id` text NOT NULL,
	`agent_id` text NOT NULL,
	`job_id` text NOT NULL,
	`status` text NOT NULL,
	`created_at` integer NOT NULL,
	`started_at` integer NOT NULL,
	`size` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `snapshots_plan` ON `snapshots` (`plan_id`,`created_at`);
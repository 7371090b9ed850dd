import { randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';

/** Ids people type: a short prefix saying what it is, then random base32. */
export type IdKind = 'job' | 'snap' | 'art' | 'agt' | 'tok' | 'drl';

const ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789';

export function newId(kind: IdKind): string {
  const bytes = randomBytes(10);
  let out = '';
  for (const b of bytes) out += ALPHABET[b % ALPHABET.length];
  return `${kind}_${out}`;
}

export function newTransferId(): string {
  return randomUUID();
}

/**
 * A name that ends up in argv, a path or a log line: letters, digits, dot, dash, underscore;
 * never a leading dash (it would read as an option), never NUL or newline.
 */
export const SafeName = z
  .string()
  .min(1, 'required')
  .max(64, 'at most 64 characters')
  .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/, 'letters, digits, ".", "-" and "_" only, not starting with "-" or "."');

/** An absolute path on an agent: no NUL, no newline, no leading dash. */
export const AbsolutePath = z
  .string()
  .min(1, 'required')
  .refine((p) => p.startsWith('/'), 'must be an absolute path')
  .refine((p) => !/[\0\n\r]/.test(p), 'must not contain NUL or newline characters');

export const Labels = z.record(
  z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/, 'label keys are lowercase letters, digits, ".", "-", "_"'),
  z.string().max(128).regex(/^[^\0\n\r]*$/, 'label values must not contain NUL or newline'),
);
export type Labels = z.infer<typeof Labels>;

/** SHA-256 in lowercase hex. */
export const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'a SHA-256 in lowercase hex');

const noControl = (s: string) => !/[\0\n\r]/.test(s);

/**
 * A database name that reaches pg_dump/mariadb-dump argv: never a leading "-" (an option), never NUL or
 * newline, and never something pg_dump would read as a connection string ("=" or a postgres:// URI).
 */
export const DatabaseName = z
  .string()
  .min(1, 'required')
  .max(128)
  .refine((s) => !s.startsWith('-'), 'must not start with "-"')
  .refine(noControl, 'must not contain NUL or newline characters')
  .refine((s) => !s.includes('=') && !/^postgres(ql)?:/i.test(s), 'must not contain "=" or be a connection URI');

/** A database user or role name: the same rules as a database name. */
export const DatabaseUser = DatabaseName;

/** A host name, an IP address, or (for PostgreSQL) a Unix socket directory. */
export const DatabaseHost = z
  .string()
  .min(1, 'required')
  .max(255)
  .regex(/^(\/[^\0\n\r]*|[A-Za-z0-9_.:[\]%-]+)$/, 'a host name, an IP address, or an absolute socket directory')
  .refine((s) => !s.startsWith('-'), 'must not start with "-"');

export const Port = z.number().int().min(1).max(65535);

/** An environment variable's name (for secrets the agent reads from its own environment). */
export const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name');

/** A schema-qualified or plain table name or pattern as pg_dump/mariadb-dump take it. */
export const TableName = z
  .string()
  .min(1)
  .max(255)
  .refine((s) => !s.startsWith('-'), 'must not start with "-"')
  .refine(noControl, 'must not contain NUL or newline characters');

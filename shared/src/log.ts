/**
 * One-line logs to stderr: time, level, component, message, then key=value fields.
 * Secrets never reach here by construction (no argv, no config objects); `redact` is a second fence
 * for text that came from elsewhere, such as a child process's stderr.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

export function redact(text: string): string {
  return text
    .replace(/(password|passwd|pwd|secret|token)(["']?\s*[=:]\s*["']?)[^\s"'&]+/gi, '$1$2***')
    .replace(/(\/\/[^:/@\s]+:)[^@/\s]+@/g, '$1***@')
    .replace(/(Bearer\s+)\S+/gi, '$1***');
}

function formatValue(value: unknown): string {
  if (typeof value === 'string') return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  if (value instanceof Error) return JSON.stringify(value.message);
  return JSON.stringify(value);
}

export function createLogger(component: string, options: { level?: Level; write?: (line: string) => void } = {}): Logger {
  const threshold = ORDER[options.level ?? ((process.env.LIFEBOAT_LOG_LEVEL as Level | undefined) ?? 'info')] ?? ORDER.info;
  const write = options.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < threshold) return;
    const extra = fields
      ? Object.entries(fields)
          .filter(([, v]) => v !== undefined)
          .map(([k, v]) => `${k}=${formatValue(v)}`)
          .join(' ')
      : '';
    write(redact(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${component}: ${msg}${extra ? ' ' + extra : ''}`));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (sub) => createLogger(`${component}.${sub}`, options),
  };
}

import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import WebSocket from 'ws';
import {
  decodeServerMessage,
  decodeFrame,
  encodeMessage,
  AgentMessages,
  FrameKind,
  LIFEBOAT_VERSION,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  type AgentConfig,
  type Logger,
  type PayloadOf,
  type ServerMessage,
  type ToolInfo,
} from '@lifeboat/shared';
import type { ServerLink, TransferHandler } from './link.js';

/** The server refused this agent's credentials: retrying cannot help, a person has to enroll it again. */
export class AuthRefused extends Error {}

export interface ConnectionHandlers {
  /** May return a promise (deriving keys); jobs that arrive meanwhile wait for it. */
  onWelcome(welcome: Extract<ServerMessage, { type: 'welcome' }>['payload']): void | Promise<void>;
  onPlans(plans: Extract<ServerMessage, { type: 'plans' }>['payload']['plans']): void;
  onJob(message: Extract<ServerMessage, { type: 'job.backup' | 'job.restore' | 'job.drill' }>): void;
  onCancel(jobId: string, reason: string): void;
  /** The socket is gone: every job in progress must stop (its data channel went with it). */
  onDisconnected(reason: string): void;
}

export interface ConnectionOptions {
  tools: ToolInfo[];
  /** Without a ping from the server for this long, the connection is presumed dead. */
  silenceMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * The agent's single outbound WebSocket: dials out, says hello, routes messages, and reconnects with jittered
 * exponential backoff. It is the only thing on the agent that knows about sockets.
 */
export class Connection implements ServerLink {
  private ws: WebSocket | null = null;
  private stopped = false;
  private attempt = 0;
  private silenceTimer: NodeJS.Timeout | null = null;
  private readonly transfers = new Map<string, TransferHandler>();
  private wakeSleep: (() => void) | null = null;
  /** Settles when the welcome's work (key derivation) is done; jobs start after it. */
  private ready: Promise<void> = Promise.resolve();

  constructor(
    private readonly config: AgentConfig,
    private readonly handlers: ConnectionHandlers,
    private readonly log: Logger,
    private readonly options: ConnectionOptions,
  ) {}

  /** Runs until stop(); rejects with AuthRefused when the server refuses the agent's credentials. */
  async run(): Promise<void> {
    while (!this.stopped) {
      const outcome = await this.connectOnce();
      if (outcome.auth) throw new AuthRefused(outcome.auth);
      if (this.stopped) break;
      const cap = Math.min(this.options.maxBackoffMs ?? 60_000, (this.options.minBackoffMs ?? 1000) * 2 ** this.attempt);
      // Full jitter, so a fleet that lost the server does not come back in one wave.
      const delay = Math.round(cap / 2 + (Math.random() * cap) / 2);
      this.attempt = Math.min(this.attempt + 1, 16);
      this.log.info(`reconnecting in ${(delay / 1000).toFixed(1)}s`, { reason: outcome.reason });
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.wakeSleep = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  stop(): void {
    this.stopped = true;
    this.wakeSleep?.();
    this.ws?.close(1000, 'agent stopping');
  }

  private connectOnce(): Promise<{ reason: string; auth?: string }> {
    return new Promise((resolve) => {
      const url = `${this.config.server.replace(/^http/, 'ws').replace(/\/+$/, '')}/v1/agent/connect`;
      const ws = new WebSocket(url, {
        headers: { Authorization: `Bearer ${this.config.agentId}.${this.config.secret}` },
        maxPayload: MAX_FRAME_BYTES,
        perMessageDeflate: false,
        handshakeTimeout: 15_000,
        // Frame masking exists to protect browsers' intermediaries from crafted payloads; the agent is no browser,
        // and an all-zero mask lets ws send each chunk without copying it (one copy per MiB saved).
        generateMask: (mask: Buffer) => void mask.fill(0),
        ...(this.config.caFile ? { ca: readFileSync(this.config.caFile) } : {}),
      });
      this.ws = ws;
      let settled = false;
      const done = (outcome: { reason: string; auth?: string }) => {
        if (settled) return;
        settled = true;
        this.clearSilence();
        this.ws = null;
        resolve(outcome);
      };

      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d.slice(0, 2000)));
        res.on('end', () => {
          let message = `HTTP ${res.statusCode}`;
          try {
            message = (JSON.parse(body) as { error: { message: string } }).error.message;
          } catch {
            /* not our JSON: keep the status */
          }
          ws.terminate();
          if (res.statusCode === 401 || res.statusCode === 403) {
            this.log.error(`the server refused this agent: ${message}`);
            done({ reason: message, auth: message });
          } else {
            this.log.warn(`the server answered the connection with ${res.statusCode}: ${message}`);
            done({ reason: message });
          }
        });
      });
      ws.on('open', () => {
        this.log.debug('connected; saying hello', { url });
        this.armSilence(ws);
        this.sendRaw(ws, 'hello', { protocol: PROTOCOL_VERSION, agentVersion: LIFEBOAT_VERSION, hostname: hostname(), platform: `${process.platform}-${process.arch} node ${process.version}`, tools: this.options.tools });
      });
      ws.on('ping', () => this.armSilence(ws));
      ws.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
      ws.on('error', (err) => {
        this.log.warn(`connection to ${url} failed: ${err.message}`);
      });
      ws.on('close', (code, reasonBuf) => {
        const reason = reasonBuf.toString() || `closed (${code})`;
        this.handlers.onDisconnected(`the connection to the server was lost: ${reason}`);
        this.transfers.clear();
        done({ reason });
      });
    });
  }

  private armSilence(ws: WebSocket): void {
    this.clearSilence();
    this.silenceTimer = setTimeout(() => {
      this.log.warn('no heartbeat from the server; dropping the connection');
      ws.terminate();
    }, this.options.silenceMs ?? 75_000);
  }

  private clearSilence(): void {
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    this.silenceTimer = null;
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      const decoded = decodeFrame(data);
      if (!decoded.ok || decoded.frame.kind !== FrameKind.Download) {
        this.log.warn('ignored a malformed binary frame from the server', { error: decoded.ok ? 'not a download frame' : decoded.error });
        return;
      }
      this.transfers.get(decoded.frame.transferId)?.onFrame?.(decoded.frame.chunkId, decoded.frame.data);
      return;
    }
    const decoded = decodeServerMessage(data.toString('utf8'));
    if (!decoded.ok) {
      this.log.warn('ignored a malformed message from the server', { error: decoded.error });
      return;
    }
    const msg = decoded.message;
    switch (msg.type) {
      case 'welcome':
        this.attempt = 0;
        this.log.info(`connected to ${this.config.server} as ${msg.payload.name}`, { plans: msg.payload.plans.length });
        this.ready = Promise.resolve(this.handlers.onWelcome(msg.payload));
        return;
      case 'plans':
        return this.handlers.onPlans(msg.payload.plans);
      case 'job.backup':
      case 'job.restore':
      case 'job.drill':
        void this.ready.then(() => this.handlers.onJob(msg));
        return;
      case 'job.cancel':
        return this.handlers.onCancel(msg.payload.jobId, msg.payload.reason);
      case 'chunks.answer':
      case 'chunks.ack':
      case 'artifact.stored':
      case 'upload.failed':
        return this.transfers.get(msg.payload.uploadId)?.onMessage?.(msg);
      case 'chunk.missing':
        return this.transfers.get(msg.payload.transferId)?.onMessage?.(msg);
      case 'chunks.absent':
        return this.transfers.get(msg.payload.queryId)?.onMessage?.(msg);
      case 'error':
        this.log.warn(`the server reported a protocol error: ${msg.payload.error.message}`);
        return;
    }
  }

  private sendRaw<K extends keyof typeof AgentMessages & string>(ws: WebSocket, type: K, payload: PayloadOf<typeof AgentMessages, K>): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(encodeMessage(AgentMessages, type, payload));
  }

  send<K extends keyof typeof AgentMessages & string>(type: K, payload: PayloadOf<typeof AgentMessages, K>): void {
    if (this.ws) this.sendRaw(this.ws, type, payload);
  }

  sendBinary(frame: Buffer): Promise<void> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected to the server'));
    return new Promise((resolve, reject) => ws.send(frame, { binary: true }, (err) => (err ? reject(err) : resolve())));
  }

  subscribe(transferId: string, handler: TransferHandler): () => void {
    this.transfers.set(transferId, handler);
    return () => {
      if (this.transfers.get(transferId) === handler) this.transfers.delete(transferId);
    };
  }
}

import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { encodeMessage, MAX_FRAME_BYTES, ServerMessages, type Logger, type PayloadOf } from '@lifeboat/shared';
import { bearerToken, secretMatches } from '../auth.js';
import type { AgentRow, Catalog } from '../catalog/catalog.js';
import type { RepositoryEncryption } from '../encryption.js';
import type { AgentLink, Clock, JobService } from '../jobs.js';
import { AgentSession } from './session.js';

export interface HubOptions {
  /** Seconds between pings; an agent that misses two is dropped. */
  heartbeatMs?: number;
  /** How long an agent has after the upgrade to say hello. */
  helloTimeoutMs?: number;
  /** Origins a browser may connect from; agents send none. Empty: refuse every request that carries an Origin. */
  allowedOrigins?: string[];
}

/**
 * The agents' WebSocket endpoint. Authentication happens in the HTTP upgrade (DESIGN §11): a bad token gets
 * a 401 and the socket is destroyed before any 101, so an unauthenticated peer never reaches the protocol.
 */
export class Hub implements AgentLink {
  private readonly wss: WebSocketServer;
  private readonly sessions = new Map<string, AgentSession>();
  readonly heartbeatMs: number;
  readonly helloTimeoutMs: number;

  constructor(
    private readonly catalog: Catalog,
    readonly jobs: JobService,
    readonly encryption: RepositoryEncryption,
    readonly clock: Clock,
    readonly log: Logger,
    private readonly options: HubOptions = {},
  ) {
    this.heartbeatMs = options.heartbeatMs ?? 30_000;
    this.helloTimeoutMs = options.helloTimeoutMs ?? 10_000;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: false });
    jobs.attach(this);
  }

  /** Bound to the HTTP server's 'upgrade' event. */
  handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path !== '/v1/agent/connect') return reject(socket, 404, 'not_found', 'no WebSocket endpoint here; agents connect to /v1/agent/connect');
    const origin = req.headers.origin;
    if (origin !== undefined && !(this.options.allowedOrigins ?? []).includes(origin)) {
      this.log.warn('refused a WebSocket upgrade with an unexpected Origin', { origin, remote: req.socket.remoteAddress });
      return reject(socket, 403, 'forbidden', 'unexpected Origin');
    }
    const result = this.authenticate(bearerToken(req.headers.authorization));
    if ('error' in result) {
      this.log.warn('refused an agent connection', { reason: result.error, remote: req.socket.remoteAddress });
      return reject(socket, 401, 'unauthorized', result.error);
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.attachSession(ws, result.agent, req));
  };

  private authenticate(token: string | null): { agent: AgentRow } | { error: string } {
    if (!token) return { error: 'missing "Authorization: Bearer <agentId>.<secret>" header' };
    const dot = token.indexOf('.');
    const agentId = dot > 0 ? token.slice(0, dot) : '';
    const secret = dot > 0 ? token.slice(dot + 1) : '';
    const agent = agentId ? this.catalog.agentById(agentId) : undefined;
    if (!agent) return { error: 'unknown agent: this server has no such agent; enroll again with `lifeboat-agent enroll`' };
    if (agent.revokedAt !== null) {
      return { error: `agent ${agent.name} was revoked on ${new Date(agent.revokedAt).toISOString()}; enroll it again with a new token` };
    }
    if (!secretMatches(secret, agent.secretHash)) return { error: `wrong secret for agent ${agent.name}; enroll it again with a new token` };
    return { agent };
  }

  private attachSession(ws: WebSocket, agent: AgentRow, req: IncomingMessage): void {
    const previous = this.sessions.get(agent.id);
    if (previous) {
      this.log.warn('agent connected again; closing its previous connection', { agent: agent.name });
      previous.close(4000, 'replaced by a newer connection');
      // The old socket's close event comes later and no longer owns the slot: settle its jobs now.
      this.jobs.onDisconnected(agent.id, agent.name);
    }
    const session = new AgentSession(ws, agent, this, this.catalog, req.socket.remoteAddress ?? '?');
    this.sessions.set(agent.id, session);
  }

  /** Called by a session when its socket closes. */
  removeSession(session: AgentSession): void {
    if (this.sessions.get(session.agent.id) === session) {
      this.sessions.delete(session.agent.id);
      this.jobs.onDisconnected(session.agent.id, session.agent.name);
    }
  }

  isOnline(agentId: string): boolean {
    return this.sessions.get(agentId)?.ready ?? false;
  }

  send<K extends keyof typeof ServerMessages & string>(agentId: string, type: K, payload: PayloadOf<typeof ServerMessages, K>): boolean {
    const session = this.sessions.get(agentId);
    return session ? session.sendText(encodeMessage(ServerMessages, type, payload)) : false;
  }

  sendBinary(agentId: string, header: Buffer, data: Buffer): boolean {
    return this.sessions.get(agentId)?.sendBinary(header, data) ?? false;
  }

  /** Plans changed: every connected agent they concern gets its full list again. */
  pushPlans(agentNames: Iterable<string>): void {
    for (const name of new Set(agentNames)) {
      const agent = this.catalog.agentByName(name);
      if (agent && this.isOnline(agent.id)) this.send(agent.id, 'plans', { plans: this.catalog.plansForAgent(name) });
    }
  }

  disconnect(agentId: string, reason: string): void {
    this.sessions.get(agentId)?.close(4003, reason);
  }

  close(): void {
    for (const session of this.sessions.values()) session.close(1001, 'server shutting down');
    this.wss.close();
  }
}

function reject(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  const reason = status === 401 ? 'Unauthorized' : status === 403 ? 'Forbidden' : 'Not Found';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
  socket.destroy();
}

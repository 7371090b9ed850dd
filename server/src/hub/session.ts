import type { WebSocket } from 'ws';
import { decodeAgentMessage, describeError, encodeMessage, LIFEBOAT_VERSION, PROTOCOL_VERSION, ServerMessages, type AgentMessage } from '@lifeboat/shared';
import type { AgentRow, Catalog } from '../catalog/catalog.js';
import type { Hub } from './hub.js';


/**
 * One agent's connection: hello deadline, heartbeat, and routing of its messages to the job service.
 * A malformed message or a refused job message closes the connection: a well-behaved agent never sends one.
 */
export class AgentSession {
  ready = false;
  private alive = true;
  private readonly helloTimer: NodeJS.Timeout;
  private readonly heartbeat: NodeJS.Timeout;

  constructor(
    private readonly ws: WebSocket,
    readonly agent: AgentRow,
    private readonly hub: Hub,
    private readonly catalog: Catalog,
    private readonly remote: string,
  ) {
    const log = hub.log;
    this.helloTimer = setTimeout(() => {
      log.warn('agent said no hello in time; closing', { agent: agent.name });
      this.close(4001, 'no hello within the deadline');
    }, hub.helloTimeoutMs);
    this.heartbeat = setInterval(() => {
      if (!this.alive) {
        log.warn('agent missed its heartbeat; dropping the connection', { agent: agent.name });
        ws.terminate();
        return;
      }
      this.alive = false;
      ws.ping();
    }, hub.heartbeatMs);
    ws.on('pong', () => {
      this.alive = true;
      this.catalog.touchAgent(agent.id, hub.clock());
    });
    ws.on('message', (data, isBinary) => void this.onMessage(data as Buffer, isBinary));
    ws.on('error', (err) => log.warn('agent connection error', { agent: agent.name, error: err.message }));
    ws.on('close', (code, reason) => {
      clearTimeout(this.helloTimer);
      clearInterval(this.heartbeat);
      if (this.ready) log.info('agent disconnected', { agent: agent.name, code, reason: reason.toString() || undefined });
      this.ready = false;
      hub.removeSession(this);
    });
  }

  private async onMessage(data: Buffer, isBinary: boolean): Promise<void> {
    const log = this.hub.log;
    try {
      if (isBinary) {
        if (!this.ready) throw new Error('binary frame before hello');
        this.hub.jobs.onFrame(this.agent.id, data);
        return;
      }
      const decoded = decodeAgentMessage(data.toString('utf8'));
      if (!decoded.ok) {
        log.warn('rejected a malformed message; closing the connection', { agent: this.agent.name, error: decoded.error });
        this.sendText(encodeMessage(ServerMessages, 'error', { ...(decoded.id ? { inReplyTo: decoded.id } : {}), error: { code: 'protocol', message: decoded.error } }));
        this.close(1008, 'malformed message');
        return;
      }
      await this.route(decoded.message);
    } catch (err) {
      const { message } = describeError(err);
      log.warn('refused a message from an agent; closing the connection', { agent: this.agent.name, error: message });
      this.sendText(encodeMessage(ServerMessages, 'error', { error: { code: 'protocol', message } }));
      this.close(1008, message.slice(0, 120));
    }
  }

  private async route(msg: AgentMessage): Promise<void> {
    const jobs = this.hub.jobs;
    if (msg.type !== 'hello' && !this.ready) throw new Error(`"${msg.type}" before hello`);
    switch (msg.type) {
      case 'hello':
        return this.onHello(msg.payload);
      case 'job.started':
        return jobs.onStarted(this.agent.id, msg.payload);
      case 'job.progress':
        return jobs.onProgress(this.agent.id, msg.payload);
      case 'job.warning':
        return jobs.onWarning(this.agent.id, msg.payload);
      case 'artifact.begin':
        return jobs.onArtifactBegin(this.agent.id, msg.payload);
      case 'chunks.offer':
        return jobs.onChunksOffer(this.agent.id, msg.payload);
      case 'chunks.reused':
        return jobs.onChunksReused(this.agent.id, msg.payload);
      case 'artifact.end':
        return jobs.onArtifactEnd(this.agent.id, msg.payload);
      case 'artifact.abort':
        return jobs.onArtifactAbort(this.agent.id, msg.payload);
      case 'chunk.request':
        return jobs.onChunkRequest(this.agent.id, msg.payload);
      case 'chunks.query':
        return jobs.onChunksQuery(this.agent.id, msg.payload);
      case 'job.finished':
        return jobs.onFinished(this.agent.id, msg.payload);
    }
  }

  private onHello(hello: Extract<AgentMessage, { type: 'hello' }>['payload']): void {
    if (this.ready) throw new Error('a second hello');
    if (hello.protocol !== PROTOCOL_VERSION) {
      throw new Error(`agent speaks protocol ${hello.protocol}, this server ${PROTOCOL_VERSION} (server ${LIFEBOAT_VERSION}); upgrade the agent`);
    }
    clearTimeout(this.helloTimer);
    const now = this.hub.clock();
    this.catalog.recordHello(this.agent.id, { hostname: hello.hostname, version: hello.agentVersion, tools: hello.tools }, now);
    this.ready = true;
    this.hub.log.info('agent connected', { agent: this.agent.name, version: hello.agentVersion, host: hello.hostname, remote: this.remote });
    this.sendText(
      encodeMessage(ServerMessages, 'welcome', {
        protocol: PROTOCOL_VERSION,
        agentId: this.agent.id,
        name: this.agent.name,
        labels: this.agent.labels,
        serverTime: new Date(now).toISOString(),
        plans: this.catalog.plansForAgent(this.agent.name),
        encryption: this.hub.encryption.current,
      }),
    );
    this.hub.jobs.dispatch(this.agent.id);
  }

  sendText(text: string): boolean {
    if (this.ws.readyState !== this.ws.OPEN) return false;
    this.ws.send(text);
    return true;
  }

  /** One binary message sent as two fragments, so the chunk is never copied behind its header. */
  sendBinary(header: Buffer, data: Buffer): boolean {
    if (this.ws.readyState !== this.ws.OPEN) return false;
    this.ws.send(header, { binary: true, fin: false });
    this.ws.send(data, { binary: true, fin: true });
    return true;
  }

  close(code: number, reason: string): void {
    this.ready = false;
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(code, reason);
  }
}

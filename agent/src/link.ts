import type { AgentMessages, PayloadOf, ServerMessages } from '@lifeboat/shared';

/** What uploads, downloads and jobs need from the connection to the server. */
export interface ServerLink {
  send<K extends keyof typeof AgentMessages & string>(type: K, payload: PayloadOf<typeof AgentMessages, K>): void;
  /** Sends one binary frame (already assembled); resolves once the socket has taken it. */
  sendBinary(frame: Buffer): Promise<void>;
  /** Routes server messages about one transfer (upload or restore) to its handler until it unsubscribes. */
  subscribe(transferId: string, handler: TransferHandler): () => void;
}

export interface TransferHandler {
  onMessage?(message: TransferMessage): void;
  onFrame?(chunkId: string, data: Buffer): void;
}

export type TransferMessage =
  | { type: 'chunks.answer'; payload: PayloadOf<typeof ServerMessages, 'chunks.answer'> }
  | { type: 'chunks.ack'; payload: PayloadOf<typeof ServerMessages, 'chunks.ack'> }
  | { type: 'artifact.stored'; payload: PayloadOf<typeof ServerMessages, 'artifact.stored'> }
  | { type: 'upload.failed'; payload: PayloadOf<typeof ServerMessages, 'upload.failed'> }
  | { type: 'chunk.missing'; payload: PayloadOf<typeof ServerMessages, 'chunk.missing'> }
  | { type: 'chunks.absent'; payload: PayloadOf<typeof ServerMessages, 'chunks.absent'> };

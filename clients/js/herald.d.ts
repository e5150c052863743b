// Type declarations for herald.js (the Herald client for browsers and Node >= 20).

export type Scalar = string | number | boolean | null;

export interface Message {
  topic: string;
  id: string;
  ts: number;
  data: unknown;
  attributes?: Record<string, Scalar>;
  /** Present on topics with a history rule. */
  offset?: number;
}

export interface ClientOptions {
  /** JWT or API key, sent in an `auth` frame right after connecting. */
  token?: string;
  /** Called for a new token before `exp`, when the server warns of expiry, and once after a 4401 close. */
  getToken?: () => string | Promise<string>;
  /** Full-jitter backoff: delay = random(0, min(maxBackoffMs, minBackoffMs * 2^failures)). Default 500. */
  minBackoffMs?: number;
  /** Default 20000. */
  maxBackoffMs?: number;
  /** Quiet time before the client sends a `ping`. Default 25000 (the server's default). */
  pingIntervalMs?: number;
  /** Further quiet time after which the connection is declared dead. Default 20000. */
  pingTimeoutMs?: number;
  /** Default 10000. */
  connectTimeoutMs?: number;
  /** A command without a reply after this long rejects with code `timeout`. Default 30000. */
  commandTimeoutMs?: number;
  /** Refresh a JWT this long before its `exp` (at most half its remaining life). Default 30000. */
  tokenRefreshWindowMs?: number;
  /** Commands kept while disconnected; beyond it they reject with `offline_queue_full`. Default 1000. */
  maxOfflineCommands?: number;
  /** WebSocket subprotocol to offer; default "herald.v1", null for none (servers before it). */
  protocol?: string | null;
  /** A WebSocket class, e.g. `ws`'s, where there is no global WebSocket. */
  WebSocket?: { new (url: string, protocols?: string | string[]): WebSocket };
  /** Default true: connect from the constructor. */
  autoConnect?: boolean;
}

export type ClientState = "idle" | "connecting" | "authenticating" | "open" | "waiting" | "closed";
export type SubscriptionState = "pending" | "subscribed" | "resubscribing" | "unsubscribed" | "failed";

export interface SubscribeOptions {
  /** SNS-style filter policy on attributes. */
  filter?: Record<string, unknown>;
  batchMs?: number;
  mode?: "all" | "latest";
  key?: string;
  /** Resume after this offset (a concrete topic with history). */
  since?: number;
  epoch?: string;
}

export interface SubscribedEvent {
  sub: string;
  epoch: string | null;
  offset: number | null;
  /** null on a first subscribe without `since`; false when messages may have been missed. */
  recovered: boolean | null;
  resubscribe: boolean;
}

export interface ErrorEvent {
  code: string;
  message: string;
}

export declare class HeraldError extends Error {
  code: string;
  reply?: Record<string, unknown>;
  closeCode?: number | null;
}

declare class Emitter<Events> {
  on<K extends keyof Events & string>(event: K, callback: (info: Events[K]) => void): this;
  on(event: "*", callback: (event: string, info: unknown) => void): this;
  off(event: string, callback: (...args: any[]) => void): this;
}

export interface SubscriptionEvents {
  message: Message;
  subscribed: SubscribedEvent;
  recovered: SubscribedEvent;
  lagged: { sub: string; dropped: number };
  error: ErrorEvent;
  state: { state: SubscriptionState };
}

export declare class Subscription extends Emitter<SubscriptionEvents> implements AsyncIterable<Message> {
  readonly pattern: string;
  readonly key: string | null;
  readonly epoch: string | null;
  /** Offset of the last message delivered. */
  readonly offset: number | null;
  readonly state: SubscriptionState;
  readonly delivered: number;
  /** Resolves on the first `subscribed`; rejects if the server refused. */
  readonly ready: Promise<Subscription>;
  unsubscribe(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<Message>;
}

export interface Job {
  queue: string;
  id: string;
  receipt: string;
  body: unknown;
  attributes: Record<string, Scalar>;
  receiveCount: number;
  raw: Record<string, unknown>;
  /** Keep the job invisible to other consumers for this many more seconds. */
  extend(visibilityTimeout: number): Promise<Record<string, unknown>>;
}

export interface ConsumeOptions {
  prefetch?: number;
  visibilityTimeout?: number;
  /** Seconds to wait before a failed job is redelivered; default 1, 2, 4 … 300. */
  nackDelay?: (receiveCount: number) => number;
}

export declare class Consumer {
  readonly queue: string;
  readonly acked: number;
  readonly nacked: number;
  stop(): void;
}

export interface ClientEvents {
  state: { state: ClientState };
  connected: { url: string };
  disconnected: { code: number | null; reason: string };
  reconnecting: { attempt: number; delay: number };
  reconnect: { reason: string; afterMs: number };
  token_refreshed: { exp: number | null };
  lagged: { sub: string; dropped: number };
  error: ErrorEvent;
  closed: { code: number | null; reason: string };
}

export declare class HeraldClient extends Emitter<ClientEvents> {
  constructor(urls: string | string[], options?: ClientOptions);
  readonly urls: string[];
  readonly url: string | null;
  readonly state: ClientState;
  /** Connection attempts, successful or not. */
  readonly attempts: number;
  /** Connections that reached `open`. */
  readonly connects: number;
  token: string | null;
  connect(): void;
  waitOpen(): Promise<void>;
  close(): void;
  backoffMs(failures: number): number;
  request(cmd: Record<string, unknown>): Promise<Record<string, unknown>>;
  publish(
    topic: string,
    data: unknown,
    options?: { attributes?: Record<string, Scalar>; id?: string },
  ): Promise<{ op: "published"; msg_id: string; offset?: number }>;
  subscribe(pattern: string, options?: SubscribeOptions, onMessage?: (msg: Message) => void): Subscription;
  subscribe(pattern: string, onMessage: (msg: Message) => void): Subscription;
  consume(queue: string, options: ConsumeOptions, handler: (job: Job) => unknown): Promise<Consumer>;
  consume(queue: string, handler: (job: Job) => unknown): Promise<Consumer>;
}

export declare function jwtExp(token: string | null | undefined): number | null;
export declare function defaultNackDelay(receiveCount: number): number;
export default HeraldClient;

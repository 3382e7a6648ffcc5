/**
 * Thin React hooks over `StudioClient` (the client does the work; these only subscribe with
 * `useSyncExternalStore`, so a component re-renders only for the slice it reads, at most once per frame).
 */
import {
  createContext,
  createElement,
  type ReactNode,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import { type IWebSocketConfig, type MessageHandler, StudioClient, type StudioClientOptions } from "../client/client";
import { type IProgressState, type JobIndexEntry, type JobProgress, progressOf } from "../client/jobs";
import type { ConnectionPhase, ConnectionState, ConnectionStatus } from "../client/reducer";
import type { Incoming } from "../client/schemas";

export type { IProgressState, IWebSocketConfig };

/** The brief's `IWebSocketState`. */
export interface IWebSocketState {
  connectionStatus: ConnectionStatus;
  lastMessage: unknown;
  error: string | null;
}

/** Connection quality for a status bar. */
export interface IConnectionQuality {
  connectionStatus: ConnectionStatus;
  phase: ConnectionPhase;
  latencyMs: number | null;
  /** Malformed or missed messages per message received, 0–1. */
  dropRate: number;
  reconnectCount: number;
  messagesReceived: number;
  malformed: number;
  error: string | null;
  breakerReason: string | null;
  nextRetryAt: number | null;
}

/**
 * Owns a client for the lifetime of the component: created on mount, closed on unmount. Under StrictMode's
 * mount → unmount → mount the first client is closed (no socket or timer survives) and a fresh one starts.
 */
function useOwnedClient(options: StudioClientOptions): StudioClient {
  const key = JSON.stringify([options.url, options.token ?? null, options.jobs ?? null, options.protocol ?? null]);
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const [client, setClient] = useState(() => new StudioClient(options));
  useEffect(() => {
    let c = client;
    if (c.getState().phase === "closed") {
      c = new StudioClient(optionsRef.current);
      setClient(c);
    }
    c.start();
    return () => c.close();
    // The client is remade when what identifies the connection changes.
  }, [key]);
  return client;
}

function useConnectionState(client: StudioClient): ConnectionState {
  return useSyncExternalStore(
    (cb) => client.subscribe(cb),
    () => client.getState(),
    () => client.getState(),
  );
}

/** The brief's hook: one connection owned by this component. */
export function useWebSocket(config: IWebSocketConfig & Partial<StudioClientOptions>): IWebSocketState & {
  client: StudioClient;
} {
  const client = useOwnedClient(config);
  const s = useConnectionState(client);
  return useMemo(
    () => ({ connectionStatus: s.connectionStatus, lastMessage: s.lastMessage, error: s.error, client }),
    [s.connectionStatus, s.lastMessage, s.error, client],
  );
}

const ClientContext = createContext<StudioClient | null>(null);

/** One shared connection per URL for everything below it. */
export function WebSocketProvider(props: StudioClientOptions & { children?: ReactNode; client?: StudioClient }) {
  const { children, client: given, ...options } = props;
  const owned = useOwnedClientIf(!given, options);
  return createElement(ClientContext.Provider, { value: given ?? owned }, children);
}

function useOwnedClientIf(own: boolean, options: StudioClientOptions): StudioClient | null {
  // Hooks cannot be conditional; a given client makes the owned one idle (never started, so no socket).
  const key = JSON.stringify([options.url, options.token ?? null, options.jobs ?? null, own]);
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const [client, setClient] = useState<StudioClient | null>(() => (own ? new StudioClient(options) : null));
  useEffect(() => {
    if (!own) return;
    let c = client;
    if (!c || c.getState().phase === "closed") {
      c = new StudioClient(optionsRef.current);
      setClient(c);
    }
    c.start();
    const started = c;
    return () => started.close();
  }, [key]);
  return client;
}

export function useStudioClient(): StudioClient {
  const c = useContext(ClientContext);
  if (!c) throw new Error("useStudioClient needs a <WebSocketProvider> above it");
  return c;
}

/** Status and quality of the shared connection. */
export function useWebSocketConnection(): IConnectionQuality {
  const client = useStudioClient();
  const s = useConnectionState(client);
  return useMemo(
    () => ({
      connectionStatus: s.connectionStatus,
      phase: s.phase,
      latencyMs: s.latencyMs,
      dropRate: s.messagesReceived ? s.messagesDropped / s.messagesReceived : 0,
      reconnectCount: s.reconnectCount,
      messagesReceived: s.messagesReceived,
      malformed: s.malformed,
      error: s.error,
      breakerReason: s.breakerReason,
      nextRetryAt: s.nextRetryAt,
    }),
    [s],
  );
}

/** Every message of one type, each exactly once and in order, without re-rendering the component. */
export function useWebSocketEvent<T = Incoming["message"]>(type: string, handler: (event: T) => void): void {
  const client = useStudioClient();
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => {
    const h: MessageHandler = (m) => ref.current(m as T);
    return client.on(type, h);
  }, [client, type]);
}

/** One job's whole record; re-renders only when that job changed (at most once per frame). */
export function useJob(jobId: string | null | undefined): JobProgress | undefined {
  const client = useStudioClient();
  return useSyncExternalStore(
    (cb) => (jobId ? client.jobs.subscribe(jobId, cb) : () => {}),
    () => (jobId ? client.jobs.get(jobId) : undefined),
    () => (jobId ? client.jobs.get(jobId) : undefined),
  );
}

/** The brief's progress hook. */
export function useProgressTracking(jobId: string | null | undefined): IProgressState {
  return progressOf(useJob(jobId));
}

/** Every job, newest first; re-renders when any job changed (at most once per frame). */
export function useJobList(): JobProgress[] {
  const client = useStudioClient();
  return useSyncExternalStore(
    (cb) => client.jobs.subscribeList(cb),
    () => client.jobs.list(),
    () => client.jobs.list(),
  );
}

/** Which jobs exist (id, status, tag, service); re-renders only when a job appears or changes status or tag. */
export function useJobIndex(): JobIndexEntry[] {
  const client = useStudioClient();
  return useSyncExternalStore(
    (cb) => client.jobs.subscribeIndex(cb),
    () => client.jobs.index(),
    () => client.jobs.index(),
  );
}

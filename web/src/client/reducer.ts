/**
 * The connection's state, changed only by actions (the brief's names). Pure: the client dispatches, the hooks read.
 */

/** The brief's four statuses. */
export type ConnectionStatus = "connecting" | "connected" | "disconnected" | "error";

/** What the page shows: the brief's status refined. */
export type ConnectionPhase =
  | "idle"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "circuit_open"
  | "polling"
  | "auth_failed"
  | "gave_up"
  | "closed";

export interface ConnectionState {
  connectionStatus: ConnectionStatus;
  phase: ConnectionPhase;
  /** The newest valid message (render from events or the job store; this is for display and debugging). */
  lastMessage: unknown;
  error: string | null;
  /** Reconnects since the page opened. */
  reconnectCount: number;
  /** The current run of failed attempts (0 once connected). */
  attempt: number;
  /** When the next connection attempt is due (epoch ms), or null. */
  nextRetryAt: number | null;
  /** Why the circuit is open, or null. */
  breakerReason: string | null;
  messagesReceived: number;
  /** Malformed messages plus events the server said it could not replay. */
  messagesDropped: number;
  malformed: number;
  /** The round trip of the last heartbeat, ms. */
  latencyMs: number | null;
  lastMessageAt: number | null;
  /** Messages waiting to be sent until the socket is back. */
  outbox: string[];
}

export type ConnectionAction =
  | { type: "CONNECT_STARTED" }
  | { type: "CONNECTION_ESTABLISHED"; at: number }
  | { type: "MESSAGE_RECEIVED"; at: number; message: unknown }
  | { type: "MESSAGE_MALFORMED"; at: number; reason: string }
  | { type: "MESSAGES_MISSED"; count: number }
  | { type: "CONNECTION_LOST"; at: number; reason: string }
  | { type: "RECONNECT_ATTEMPT"; attempt: number; retryAt: number }
  | { type: "MESSAGE_QUEUED"; message: string }
  | { type: "OUTBOX_FLUSHED" }
  | { type: "LATENCY_MEASURED"; ms: number }
  | { type: "CIRCUIT_OPENED"; reason: string; retryAt: number }
  | { type: "POLLING_STARTED" }
  | { type: "AUTH_FAILED"; reason: string }
  | { type: "GAVE_UP"; reason: string }
  | { type: "CLOSED" };

/** Messages kept for sending while offline; beyond that the oldest go (they are pings and acks). */
export const OUTBOX_LIMIT = 100;

export const initialConnectionState: ConnectionState = {
  connectionStatus: "connecting",
  phase: "idle",
  lastMessage: null,
  error: null,
  reconnectCount: 0,
  attempt: 0,
  nextRetryAt: null,
  breakerReason: null,
  messagesReceived: 0,
  messagesDropped: 0,
  malformed: 0,
  latencyMs: null,
  lastMessageAt: null,
  outbox: [],
};

export function connectionReducer(s: ConnectionState, a: ConnectionAction): ConnectionState {
  switch (a.type) {
    case "CONNECT_STARTED":
      return s.phase === "idle" ? { ...s, connectionStatus: "connecting", phase: "connecting" } : s;
    case "CONNECTION_ESTABLISHED":
      return {
        ...s,
        connectionStatus: "connected",
        phase: "connected",
        error: null,
        attempt: 0,
        nextRetryAt: null,
        breakerReason: null,
        lastMessageAt: a.at,
      };
    case "MESSAGE_RECEIVED":
      return { ...s, lastMessage: a.message, messagesReceived: s.messagesReceived + 1, lastMessageAt: a.at };
    case "MESSAGE_MALFORMED":
      return {
        ...s,
        malformed: s.malformed + 1,
        messagesDropped: s.messagesDropped + 1,
        messagesReceived: s.messagesReceived + 1,
        lastMessageAt: a.at,
      };
    case "MESSAGES_MISSED":
      return { ...s, messagesDropped: s.messagesDropped + a.count };
    case "CONNECTION_LOST":
      if (s.phase === "auth_failed" || s.phase === "closed" || s.phase === "gave_up") return s;
      return {
        ...s,
        connectionStatus: "disconnected",
        phase: s.phase === "polling" || s.phase === "circuit_open" ? s.phase : "reconnecting",
        error: a.reason,
      };
    case "RECONNECT_ATTEMPT":
      return {
        ...s,
        connectionStatus: s.phase === "polling" ? "disconnected" : "connecting",
        phase: s.phase === "polling" || s.phase === "circuit_open" ? s.phase : "reconnecting",
        attempt: a.attempt,
        reconnectCount: s.reconnectCount + 1,
        nextRetryAt: a.retryAt,
      };
    case "MESSAGE_QUEUED": {
      const outbox = [...s.outbox, a.message];
      return { ...s, outbox: outbox.length > OUTBOX_LIMIT ? outbox.slice(-OUTBOX_LIMIT) : outbox };
    }
    case "OUTBOX_FLUSHED":
      return s.outbox.length ? { ...s, outbox: [] } : s;
    case "LATENCY_MEASURED":
      return { ...s, latencyMs: a.ms };
    case "CIRCUIT_OPENED":
      return {
        ...s,
        connectionStatus: "disconnected",
        phase: "circuit_open",
        breakerReason: a.reason,
        nextRetryAt: a.retryAt,
      };
    case "POLLING_STARTED":
      return { ...s, connectionStatus: "disconnected", phase: "polling" };
    case "AUTH_FAILED":
      return { ...s, connectionStatus: "error", phase: "auth_failed", error: a.reason, nextRetryAt: null };
    case "GAVE_UP":
      return { ...s, connectionStatus: "error", phase: "gave_up", error: a.reason, nextRetryAt: null };
    case "CLOSED":
      return { ...s, connectionStatus: "disconnected", phase: "closed", nextRetryAt: null };
  }
}

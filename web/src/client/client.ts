/**
 * The studio client: one connection, its recovery, and the job store it feeds. Framework-free; React hooks wrap
 * it (see `../react`), the reverse never happens.
 *
 * Recovery, in order: reconnect with exponential backoff and jitter; a heartbeat that notices a silent link within
 * two intervals; a circuit breaker that stops a flapping link from storming the server and polls over HTTP every
 * 2 s meanwhile; resume by offset so nothing is missed; `localStorage` so a reload shows the last state at once.
 */
import {
  type BackoffOptions,
  type BreakerOptions,
  CircuitBreaker,
  DEFAULT_BACKOFF,
  DEFAULT_BREAKER,
  reconnectDelay,
} from "./backoff";
import { animationFrame, type FrameScheduler } from "./frame";
import { type JobProgress, JobStore, TERMINAL } from "./jobs";
import { type ConnectionAction, type ConnectionState, connectionReducer, initialConnectionState } from "./reducer";
import {
  type ComfyPreview,
  type Incoming,
  type JobView,
  JobViewSchema,
  type Protocol,
  parseComfyBinary,
  parseText,
  protocolOf,
} from "./schemas";

/** The socket the client needs (the browser's, or `ws` in Node). */
export interface SocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type SocketFactory = new (url: string, protocols?: string | string[]) => SocketLike;

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The brief's `IWebSocketConfig`, plus what the studio needs. */
export interface IWebSocketConfig {
  /** `ws://host:port/ws/events` (studio stream), `/ws/{job_id}`, `/ws/monitor`, or a ComfyUI `/ws?clientId=`. */
  url: string;
  /** The first reconnect delay, ms (then × 1.5 up to 30 s, with jitter). Default 1000. */
  reconnectInterval?: number;
  /** Attempts before giving up (the page then shows an error). Default: never give up. */
  maxReconnectAttempts?: number;
  /** Heartbeat period, ms; a link silent for two periods is dropped and re-made. Default 15000. */
  heartbeatInterval?: number;
}

export interface StudioClientOptions extends IWebSocketConfig {
  protocol?: Protocol;
  /** The HTTP base for polling and links; default: the socket URL's origin. */
  httpBase?: string;
  token?: string | null;
  /** Which jobs the stream carries (`/ws/events` only): default all. */
  jobs?: ReadonlyArray<string> | null;
  backoff?: Partial<BackoffOptions>;
  breaker?: Partial<BreakerOptions>;
  /**
   * How often a job's progress alone reaches the page, ms (lifecycle changes: the next frame). Default 100:
   * ten progress updates a second per job, painted together. 0 = every frame.
   */
  progressInterval?: number;
  /** HTTP polling period while the socket cannot be had, ms. Default 2000. */
  pollInterval?: number;
  /** null turns persistence off; default `globalThis.localStorage` when there is one. */
  storage?: StorageLike | null;
  storageKey?: string;
  WebSocket?: SocketFactory;
  fetch?: typeof fetch;
  random?: () => number;
  now?: () => number;
  schedule?: FrameScheduler;
}

/** A handler for one message type. */
export type MessageHandler = (message: Incoming["message"], protocol: Protocol) => void;

interface Persisted {
  v: 1;
  epoch: string | null;
  offset: number | null;
  jobs: JobProgress[];
}

const PERSIST_JOBS = 200;
const PERSIST_HISTORY = 20;
const PERSIST_EVERY_MS = 1000;

/** Messages applied before others in one burst: a completion or failure is never behind a pile of progress. */
function priority(m: Incoming["message"]): number {
  switch (m.type) {
    case "subscribed":
      return -1;
    case "job_failed":
    case "job_completed":
    case "job_cancelled":
    case "execution_error":
    case "execution_success":
    case "execution_interrupted":
    case "error":
      return 0;
    case "progress":
    case "preview":
    case "binary_preview":
      return 2;
    default:
      return 1;
  }
}

/** The job a message is about, when it is about one. */
function jobOf(m: Incoming["message"]): string | null {
  if ("job_id" in m && typeof m.job_id === "string") return m.job_id;
  if ("prompt_id" in m && typeof m.prompt_id === "string") return m.prompt_id;
  if ("data" in m && m.data && typeof m.data === "object" && "prompt_id" in m.data) {
    return typeof m.data.prompt_id === "string" ? m.data.prompt_id : null;
  }
  return null;
}

function defaultStorage(): StorageLike | null {
  try {
    return typeof localStorage !== "undefined" ? localStorage : null;
  } catch {
    return null;
  }
}

export class StudioClient {
  readonly protocol: Protocol;
  readonly jobs: JobStore;
  readonly httpBase: string;
  private state: ConnectionState = initialConnectionState;
  private listeners = new Set<() => void>();
  private handlers = new Map<string, Set<MessageHandler>>();
  private anyHandlers = new Set<MessageHandler>();
  private socket: SocketLike | null = null;
  private started = false;
  private closed = false;
  private opened = false;
  private trial = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private pollTimer: ReturnType<typeof setTimeout> | null = null;
  private persistTimer: ReturnType<typeof setTimeout> | null = null;
  private cancelNotify: (() => void) | null = null;
  private cancelInbox: (() => void) | null = null;
  private inbox: Incoming[] = [];
  private pingSentAt: number | null = null;
  private heartbeatMisses = 0;
  private breaker: CircuitBreaker;
  private backoff: BackoffOptions;
  private epoch: string | null = null;
  private offset: number | null = null;
  private previewUrls: string[] = [];
  /** Handlers that threw (each reported on the console). */
  handlerErrors = 0;
  /** Why the newest malformed message was refused (for the console and tests). */
  lastMalformed: string | null = null;
  /** Jobs first seen in the stream (which does not carry their tag): asked for once over HTTP. */
  private described = new Set<string>();
  private readonly o: Required<Pick<StudioClientOptions, "pollInterval" | "heartbeatInterval">> & StudioClientOptions;
  private readonly now: () => number;
  private readonly schedule: FrameScheduler;
  private readonly storage: StorageLike | null;
  private readonly storageKey: string;

  constructor(options: StudioClientOptions) {
    this.o = { pollInterval: 2000, heartbeatInterval: 15_000, ...options };
    this.protocol = options.protocol ?? protocolOf(options.url);
    const u = new URL(options.url, typeof location !== "undefined" ? location.href : "http://localhost");
    this.httpBase = (options.httpBase ?? `${u.protocol === "wss:" ? "https:" : "http:"}//${u.host}`).replace(/\/$/, "");
    this.now = options.now ?? Date.now;
    this.schedule = options.schedule ?? animationFrame;
    this.backoff = {
      ...DEFAULT_BACKOFF,
      initial: options.reconnectInterval ?? DEFAULT_BACKOFF.initial,
      ...options.backoff,
    };
    this.breaker = new CircuitBreaker({ ...DEFAULT_BREAKER, ...options.breaker });
    this.storage = options.storage === undefined ? defaultStorage() : options.storage;
    this.storageKey = options.storageKey ?? `director-link:${u.host}${u.pathname}`;
    this.jobs = new JobStore({
      link: (p) => this.link(p),
      now: this.now,
      schedule: this.schedule,
      progressInterval: options.progressInterval ?? 100,
    });
    this.restore();
  }

  // ---- public --------------------------------------------------------------------------------------------

  getState(): ConnectionState {
    return this.state;
  }

  /** Told (at most once per frame) when the connection state changed. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Every valid message of one `type` (`"*"` for all), in arrival order except that terminal events go first. */
  on(type: string, handler: MessageHandler): () => void {
    if (type === "*") {
      this.anyHandlers.add(handler);
      return () => this.anyHandlers.delete(handler);
    }
    let set = this.handlers.get(type);
    if (!set) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(handler);
    return () => set.delete(handler);
  }

  /** Where the stream resumes from. */
  position(): { epoch: string | null; offset: number | null } {
    return { epoch: this.epoch, offset: this.offset };
  }

  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    if (typeof addEventListener === "function") {
      addEventListener("online", this.onOnline);
      addEventListener("pagehide", this.onPageHide);
    }
    this.connect();
  }

  /** Sends now, or queues until the socket is back. */
  send(message: unknown): void {
    const text = typeof message === "string" ? message : JSON.stringify(message);
    if (this.socket && this.opened && this.socket.readyState === 1) {
      this.socket.send(text);
    } else {
      this.dispatch({ type: "MESSAGE_QUEUED", message: text });
    }
  }

  /** Tries the socket now (the page's "retry" button; also after the laptop wakes and goes online). */
  retryNow(): void {
    if (this.closed || this.state.phase === "connected") return;
    this.clearReconnect();
    if (this.state.phase === "circuit_open" || this.state.phase === "polling") this.trial = true;
    this.connect();
  }

  /** Changes the token (the page asks for it after a 401) and reconnects. */
  setToken(token: string | null): void {
    this.o.token = token;
    this.breaker.reset();
    if (this.state.phase === "auth_failed" || this.state.phase === "gave_up") {
      this.dispatch({ type: "CONNECTION_LOST", at: this.now(), reason: "retrying with a new token" });
      this.state = { ...this.state, phase: "reconnecting" };
    }
    this.dropSocket();
    this.clearReconnect();
    this.connect();
  }

  /** A link to a server path (`/api/jobs/…`), with the token for `<img>` and `<a>` which cannot send headers. */
  link(path: string): string {
    const base = /^https?:/.test(path) ? path : `${this.httpBase}${path}`;
    if (!this.o.token) return base;
    return `${base}${base.includes("?") ? "&" : "?"}token=${encodeURIComponent(this.o.token)}`;
  }

  /** An HTTP call to the studio server with the token. Never throws for HTTP errors; returns the response. */
  async request(path: string, init: RequestInit = {}): Promise<Response> {
    const f = this.o.fetch ?? globalThis.fetch;
    const headers = new Headers(init.headers);
    if (this.o.token) headers.set("Authorization", `Bearer ${this.o.token}`);
    return f(`${this.httpBase}${path}`, { ...init, headers });
  }

  /** Stops everything: socket, timers, frame callbacks; saves the state. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.persistNow();
    this.dropSocket();
    this.clearReconnect();
    this.stopPolling();
    if (this.persistTimer) clearTimeout(this.persistTimer);
    this.persistTimer = null;
    this.cancelNotify?.();
    this.cancelNotify = null;
    this.cancelInbox?.();
    this.cancelInbox = null;
    this.inbox = [];
    this.jobs.dispose();
    for (const u of this.previewUrls) URL.revokeObjectURL?.(u);
    this.previewUrls = [];
    if (typeof removeEventListener === "function") {
      removeEventListener("online", this.onOnline);
      removeEventListener("pagehide", this.onPageHide);
    }
    this.state = connectionReducer(this.state, { type: "CLOSED" });
  }

  /** Timers and sockets still held (tests assert zero after `close()`). */
  resources(): { socket: boolean; timers: number } {
    const timers = [this.reconnectTimer, this.heartbeatTimer, this.pollTimer, this.persistTimer].filter(Boolean).length;
    return { socket: this.socket !== null, timers: timers + (this.cancelNotify ? 1 : 0) + (this.cancelInbox ? 1 : 0) };
  }

  // ---- connection -------------------------------------------------------------------------------------------

  private socketUrl(): string {
    const u = new URL(this.o.url, typeof location !== "undefined" ? location.href : "http://localhost");
    if (this.protocol === "studio") {
      if (this.o.jobs?.length) u.searchParams.set("jobs", this.o.jobs.join(","));
      if (this.offset !== null) u.searchParams.set("since", String(this.offset));
      if (this.epoch !== null) u.searchParams.set("epoch", this.epoch);
    }
    return u.toString();
  }

  private connect(): void {
    if (this.closed) return;
    this.dropSocket();
    const Impl = this.o.WebSocket ?? (globalThis.WebSocket as unknown as SocketFactory | undefined);
    if (this.state.phase === "idle") this.dispatch({ type: "CONNECT_STARTED" });
    let socket: SocketLike;
    try {
      if (!Impl) throw new Error("this browser has no WebSocket");
      // Browsers cannot send headers on a WebSocket: the token travels as the sub-protocol `bearer.<token>`.
      socket =
        this.o.token && this.protocol !== "comfyui"
          ? new Impl(this.socketUrl(), [`bearer.${this.o.token}`])
          : new Impl(this.socketUrl());
    } catch (e) {
      // Blocked (a proxy, a policy): polling carries the page until the socket can be had.
      this.onSocketUnavailable(e instanceof Error ? e.message : String(e));
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.opened = false;
    socket.onopen = () => this.onOpen(socket);
    socket.onmessage = (ev) => this.onMessage(socket, ev.data);
    socket.onerror = () => {};
    socket.onclose = (ev) => this.onClose(socket, ev.code, ev.reason);
  }

  private onOpen(socket: SocketLike): void {
    if (socket !== this.socket) return;
    this.opened = true;
    if (this.trial || this.breaker.open) {
      this.trial = false;
      this.breaker.reset();
    }
    this.stopPolling();
    this.dispatch({ type: "CONNECTION_ESTABLISHED", at: this.now() });
    for (const m of this.state.outbox) socket.send(m);
    this.dispatch({ type: "OUTBOX_FLUSHED" });
    this.startHeartbeat();
    // The first ping at once: the page shows the link's latency without waiting a whole interval.
    if (this.protocol !== "comfyui" && this.o.heartbeatInterval > 0) {
      this.pingSentAt = this.now();
      socket.send(JSON.stringify({ type: "ping" }));
    }
  }

  private onClose(socket: SocketLike, code: number, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = null;
    this.stopHeartbeat();
    const wasOpen = this.opened;
    this.opened = false;
    if (this.closed) return;
    this.flushInbox();
    this.lost(wasOpen, reason || `the connection closed (code ${code})`);
  }

  /** The socket is gone: find out whether retrying can help, then retry on the schedule. */
  private lost(wasOpen: boolean, reason: string): void {
    this.dispatch({ type: "CONNECTION_LOST", at: this.now(), reason });
    if (!wasOpen && this.protocol !== "comfyui") {
      // A refused upgrade looks the same as a dead server to a browser; HTTP tells which (401: a wrong token).
      this.probe().then((status) => {
        if (this.closed) return;
        if (status === 401) this.authFailed();
        else this.scheduleReconnect(reason);
      });
      return;
    }
    this.scheduleReconnect(reason);
  }

  private async probe(): Promise<number | null> {
    try {
      const r = await this.request("/api/health");
      return r.status;
    } catch {
      return null;
    }
  }

  private authFailed(): void {
    this.clearReconnect();
    this.stopPolling();
    this.dispatch({
      type: "AUTH_FAILED",
      reason: this.o.token
        ? "the studio server refused this token (401): check it and enter it again"
        : "this studio server needs a token (401): enter it to connect",
    });
  }

  private scheduleReconnect(reason: string): void {
    if (this.closed || this.reconnectTimer) return;
    const now = this.now();
    if (this.trial || this.breaker.open) {
      this.trial = false;
      const open = this.breaker.trialFailed(now, `the trial connection failed: ${reason}`);
      this.openCircuit(open.reason, open.retryAt);
      return;
    }
    const max = this.o.maxReconnectAttempts ?? Number.POSITIVE_INFINITY;
    if (this.state.attempt >= max) {
      this.dispatch({ type: "GAVE_UP", reason: `gave up after ${max} reconnect attempts: ${reason}` });
      this.startPolling();
      return;
    }
    const tripped = this.breaker.recordReconnect(now);
    if (tripped) {
      this.openCircuit(tripped.reason, tripped.retryAt);
      return;
    }
    const delay = reconnectDelay(this.state.attempt, this.backoff, this.o.random);
    this.dispatch({ type: "RECONNECT_ATTEMPT", attempt: this.state.attempt + 1, retryAt: now + delay });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  private openCircuit(reason: string, retryAt: number): void {
    this.dispatch({ type: "CIRCUIT_OPENED", reason, retryAt });
    this.startPolling();
    this.clearReconnect();
    this.reconnectTimer = setTimeout(
      () => {
        this.reconnectTimer = null;
        this.trial = true;
        this.connect();
      },
      Math.max(0, retryAt - this.now()),
    );
  }

  private onSocketUnavailable(reason: string): void {
    this.socket = null;
    this.dispatch({ type: "CONNECTION_LOST", at: this.now(), reason });
    this.scheduleReconnect(reason);
    this.startPolling();
  }

  private dropSocket(): void {
    const s = this.socket;
    this.socket = null;
    this.opened = false;
    this.stopHeartbeat();
    if (!s) return;
    s.onopen = null;
    s.onmessage = null;
    s.onclose = null;
    s.onerror = () => {};
    try {
      s.close(1000, "client closing");
    } catch {
      // Closing a socket that never opened can throw in some hosts; it is gone either way.
    }
  }

  private clearReconnect(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  private readonly onOnline = () => this.retryNow();
  private readonly onPageHide = () => this.persistNow();

  // ---- heartbeat ---------------------------------------------------------------------------------------------

  private startHeartbeat(): void {
    this.stopHeartbeat();
    this.heartbeatMisses = 0;
    const every = this.o.heartbeatInterval;
    if (!(every > 0)) return;
    this.heartbeatTimer = setInterval(() => this.beat(), every);
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.pingSentAt = null;
  }

  private beat(): void {
    const s = this.socket;
    if (!s || !this.opened) return;
    const now = this.now();
    const every = this.o.heartbeatInterval;
    if (this.protocol === "comfyui") {
      // ComfyUI is silent when idle and has no application ping: its HTTP side answers for the link.
      this.request("/queue").then(
        (r) => {
          this.heartbeatMisses = 0;
          if (r.ok) this.dispatch({ type: "LATENCY_MEASURED", ms: this.now() - now });
        },
        () => {
          this.heartbeatMisses += 1;
          if (this.heartbeatMisses >= 2) this.stale("ComfyUI stopped answering");
        },
      );
      return;
    }
    // Silent for two intervals (a sleeping laptop, a dead NAT entry): the socket is a ghost; make a new one.
    const last = this.state.lastMessageAt ?? now;
    if (now - last >= 2 * every) {
      this.stale(`no message for ${Math.round((now - last) / 1000)} s`);
      return;
    }
    this.pingSentAt = now;
    try {
      s.send(JSON.stringify({ type: "ping" }));
    } catch {
      this.stale("the socket refused a ping");
    }
  }

  private stale(reason: string): void {
    this.dropSocket();
    if (!this.closed) this.lost(true, `stale link: ${reason}`);
  }

  // ---- messages -------------------------------------------------------------------------------------------------

  private onMessage(socket: SocketLike, data: unknown): void {
    if (socket !== this.socket || this.closed) return;
    const at = this.now();
    let parsed: ReturnType<typeof parseText>;
    if (typeof data === "string") {
      parsed = parseText(this.protocol, data);
    } else if (data instanceof ArrayBuffer) {
      const p = this.protocol === "comfyui" ? parseComfyBinary(data) : null;
      parsed = p
        ? { ok: true, value: { protocol: "comfyui", message: p } as Incoming }
        : { ok: false, reason: "binary frame" };
    } else {
      parsed = { ok: false, reason: "unknown frame" };
    }
    if (!parsed.ok) {
      // Counted and shown; never thrown: one bad frame must not take the page down.
      this.lastMalformed = parsed.reason;
      this.dispatch({ type: "MESSAGE_MALFORMED", at, reason: parsed.reason });
      return;
    }
    const m = parsed.value.message;
    if (m.type === "pong" && this.pingSentAt !== null) {
      this.dispatch({ type: "LATENCY_MEASURED", ms: at - this.pingSentAt });
      this.pingSentAt = null;
    }
    if (m.type === "ping" && this.protocol !== "comfyui") {
      socket.send(JSON.stringify({ type: "pong" }));
    }
    this.inbox.push(parsed.value);
    if (!this.cancelInbox) this.cancelInbox = this.schedule(() => this.flushInbox());
  }

  /** Applies a burst: jobs that end in it first, then lifecycle, then progress; each job's own order is kept. */
  private flushInbox(): void {
    this.cancelInbox?.();
    this.cancelInbox = null;
    if (!this.inbox.length) return;
    const burst = this.inbox;
    this.inbox = [];
    // A job that ends in this burst: its progress in the same burst is superseded (coalesced, like the server
    // does), so no handler sees progress after the job's end.
    const ended = new Set<string>();
    for (const item of burst) {
      const job = priority(item.message) === 0 ? jobOf(item.message) : null;
      if (job) ended.add(job);
    }
    // A job that ends moves ahead as a whole (its own order kept): its end is never behind other jobs' progress.
    const ordered = burst
      .map((item, i) => {
        const p = priority(item.message);
        const endedJob = ended.has(jobOf(item.message) ?? "");
        return { item, i, p: endedJob && p > 0 ? (p === 2 ? 3 : 0) : p };
      })
      .filter((x) => x.p !== 3)
      .sort((a, b) => a.p - b.p || a.i - b.i)
      .map((x) => x.item);
    let last: unknown = null;
    for (const item of ordered) {
      this.apply(item);
      last = item.message;
      this.emit(item);
    }
    this.state = connectionReducer(this.state, {
      type: "MESSAGE_RECEIVED",
      at: this.now(),
      message: last,
    });
    this.state = { ...this.state, messagesReceived: this.state.messagesReceived + burst.length - 1 };
    this.notify();
    this.persistSoon(ordered.some((x) => priority(x.message) === 0));
  }

  private apply(item: Incoming): void {
    const m = item.message;
    if (item.protocol === "studio") {
      if (m.type === "subscribed") {
        if (!m.recovered) {
          if (m.since != null && this.offset !== null) this.dispatch({ type: "MESSAGES_MISSED", count: 1 });
          if (m.snapshot) this.jobs.applyViews(m.snapshot);
        }
        this.epoch = m.epoch;
        this.offset = m.recovered ? Math.max(this.offset ?? 0, m.since ?? 0) : m.offset;
        return;
      }
      if ("offset" in m && typeof m.offset === "number" && "time" in m) {
        this.offset = Math.max(this.offset ?? 0, m.offset);
        const id = "job_id" in m && typeof m.job_id === "string" ? m.job_id : null;
        const unknown = id !== null && !this.jobs.get(id);
        this.jobs.applyStream(m as Parameters<JobStore["applyStream"]>[0]);
        if (unknown && id) this.describe(id);
      }
      return;
    }
    if (item.protocol === "brief") {
      if (m.type === "progress" || m.type === "system_status")
        this.jobs.applyBrief(m as Parameters<JobStore["applyBrief"]>[0]);
      return;
    }
    if (m.type === "binary_preview" || m.type === "progress_text") {
      this.jobs.applyComfy(m, (p) => this.previewUrl(p));
      return;
    }
    if ("data" in m) this.jobs.applyComfy(m as Parameters<JobStore["applyComfy"]>[0], (p) => this.previewUrl(p));
  }

  /** Fetches a job's tag and timings, once (the stream's events do not repeat them). */
  private describe(jobId: string): void {
    if (this.described.has(jobId) || this.closed) return;
    this.described.add(jobId);
    this.request(`/api/jobs/${encodeURIComponent(jobId)}`)
      .then(async (r) => {
        if (!r.ok || this.closed) return;
        const v = JobViewSchema.safeParse(await r.json());
        if (v.success) this.jobs.applyViews([v.data]);
      })
      .catch(() => {
        // The stream still carries the job; only its tag is missing until the next snapshot.
      });
  }

  private previewUrl(p: ComfyPreview): string | null {
    if (typeof URL.createObjectURL !== "function" || typeof Blob === "undefined") return null;
    const url = URL.createObjectURL(new Blob([p.image as BlobPart], { type: p.mime }));
    this.previewUrls.push(url);
    // Keep the newest few alive; older previews are replaced on screen already.
    while (this.previewUrls.length > 8) URL.revokeObjectURL(this.previewUrls.shift() as string);
    return url;
  }

  private emit(item: Incoming): void {
    const set = this.handlers.get(item.message.type);
    for (const h of set ? [...set] : []) this.safely(h, item);
    for (const h of [...this.anyHandlers]) this.safely(h, item);
  }

  private safely(h: MessageHandler, item: Incoming): void {
    try {
      h(item.message, item.protocol);
    } catch (e) {
      // A handler's bug is reported, not thrown: the stream goes on for every other handler and the page.
      this.handlerErrors += 1;
      console.error(`director-link: a handler of "${item.message.type}" messages threw`, e);
    }
  }

  private dispatch(a: ConnectionAction): void {
    this.state = connectionReducer(this.state, a);
    this.notify();
  }

  private notify(): void {
    if (this.cancelNotify || this.closed) return;
    this.cancelNotify = this.schedule(() => {
      this.cancelNotify = null;
      for (const l of [...this.listeners]) l();
    });
  }

  // ---- polling ---------------------------------------------------------------------------------------------------

  private startPolling(): void {
    if (this.pollTimer || this.closed || this.protocol === "comfyui") return;
    const tick = async () => {
      this.pollTimer = null;
      if (this.closed) return;
      try {
        const r = await this.request("/api/jobs?limit=200");
        if (this.closed) return;
        if (r.status === 401) {
          this.authFailed();
          return;
        }
        if (r.ok) {
          const body: unknown = await r.json();
          const list = (body as { jobs?: unknown })?.jobs;
          const views: JobView[] = [];
          for (const j of Array.isArray(list) ? list : []) {
            const v = JobViewSchema.safeParse(j);
            if (v.success) views.push(v.data);
            else this.dispatch({ type: "MESSAGE_MALFORMED", at: this.now(), reason: "polled job" });
          }
          this.jobs.applyViews(views);
          if (
            this.state.phase === "circuit_open" ||
            this.state.phase === "reconnecting" ||
            this.state.phase === "gave_up"
          ) {
            if (this.state.phase !== "gave_up") this.dispatch({ type: "POLLING_STARTED" });
          }
          this.persistSoon(false);
        }
      } catch {
        // The server is down for HTTP too: the state already says disconnected; keep trying on the period.
      }
      if (!this.closed && this.state.phase !== "auth_failed" && this.state.phase !== "connected") {
        this.pollTimer = setTimeout(tick, this.o.pollInterval);
      }
    };
    this.pollTimer = setTimeout(tick, 0);
  }

  private stopPolling(): void {
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  // ---- persistence -----------------------------------------------------------------------------------------------

  private restore(): void {
    if (!this.storage) return;
    try {
      const raw = this.storage.getItem(this.storageKey);
      if (!raw) return;
      const p = JSON.parse(raw) as Partial<Persisted>;
      if (p.v !== 1) return;
      this.epoch = typeof p.epoch === "string" ? p.epoch : null;
      this.offset = typeof p.offset === "number" ? p.offset : null;
      if (Array.isArray(p.jobs)) this.jobs.importJobs(p.jobs);
    } catch {
      // A corrupt entry is dropped: the server's snapshot rebuilds it.
      this.storage.removeItem(this.storageKey);
    }
  }

  private persistSoon(urgent: boolean): void {
    if (!this.storage || this.closed) return;
    if (urgent) {
      this.persistNow();
      return;
    }
    if (this.persistTimer) return;
    this.persistTimer = setTimeout(() => {
      this.persistTimer = null;
      this.persistNow();
    }, PERSIST_EVERY_MS);
  }

  private persistNow(): void {
    if (!this.storage) return;
    const p: Persisted = {
      v: 1,
      epoch: this.epoch,
      offset: this.offset,
      jobs: this.jobs.exportJobs(PERSIST_JOBS, PERSIST_HISTORY).map((j) => ({
        ...j,
        // Object URLs die with the page.
        previewUrl: j.previewUrl?.startsWith("blob:") ? null : j.previewUrl,
      })),
    };
    try {
      this.storage.setItem(this.storageKey, JSON.stringify(p));
    } catch {
      // Storage full or denied (private mode): the page works without it.
    }
  }
}

export { TERMINAL };

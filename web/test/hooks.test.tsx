// @vitest-environment happy-dom
import { act, StrictMode } from "react";
import { createRoot, type Root } from "react-dom/client";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { SocketFactory, StudioClient } from "../src/client/client";
import {
  useProgressTracking,
  useStudioClient,
  useWebSocket,
  useWebSocketConnection,
  useWebSocketEvent,
  WebSocketProvider,
} from "../src/react/hooks";
import { ev, progress, startServer, subscribed, type TestServer, until } from "./server";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
const WS = WebSocket as unknown as SocketFactory;

let srv: TestServer | null = null;
let root: Root | null = null;
let host: HTMLElement | null = null;

afterEach(async () => {
  if (root) act(() => root?.unmount());
  root = null;
  host?.remove();
  await srv?.close();
  srv = null;
});

function mount(node: React.ReactNode) {
  host = document.createElement("div");
  document.body.appendChild(host);
  root = createRoot(host);
  act(() => root?.render(node));
}

/** Waits with React flushing what the client scheduled. */
async function settle(cond: () => boolean, what: string) {
  await until(() => {
    act(() => {});
    return cond();
  }, what);
}

const renders: Record<string, number> = {};
const shown: Record<string, number> = {};
let clientSeen: StudioClient | null = null;

function Progress({ jobId }: { jobId: string }) {
  const p = useProgressTracking(jobId);
  renders[jobId] = (renders[jobId] ?? 0) + 1;
  shown[jobId] = p.currentStep;
  return <span data-job={jobId}>{p.percentage}</span>;
}

function Grab() {
  clientSeen = useStudioClient();
  return null;
}

const events: number[] = [];
function Listener() {
  useWebSocketEvent<{ value: number }>("progress", (e) => events.push(e.value));
  return null;
}

let quality: ReturnType<typeof useWebSocketConnection> | null = null;
function Quality() {
  quality = useWebSocketConnection();
  return null;
}

let ownerPort = 0;
let state: ReturnType<typeof useWebSocket> | null = null;
const current = () => state;
function Owner() {
  state = useWebSocket({
    url: `ws://127.0.0.1:${ownerPort}/ws?clientId=x`,
    reconnectInterval: 10,
    maxReconnectAttempts: 2,
    heartbeatInterval: 1000,
    WebSocket: WS,
    storage: null,
  });
  return null;
}

describe("hooks", () => {
  it("one shared connection under StrictMode, per-job renders, every event once, cleanup on unmount", async () => {
    srv = await startServer();
    const s = srv;
    s.onConnect = (conn) => {
      conn.socket.send(subscribed("E", 0, false, null, []));
      conn.socket.send(ev(1, "job_started", { job_id: "a", service: "sim" }));
      conn.socket.send(ev(2, "job_started", { job_id: "b", service: "sim" }));
    };
    mount(
      <StrictMode>
        <WebSocketProvider url={s.wsUrl("/ws/events")} WebSocket={WS} storage={null}>
          <Progress jobId="a" />
          <Progress jobId="b" />
          <Listener />
          <Quality />
          <Grab />
        </WebSocketProvider>
      </StrictMode>,
    );
    await settle(() => s.open() === 1 && clientSeen?.jobs.get("b") !== undefined, "connected");
    await settle(() => quality?.connectionStatus === "connected", "quality says connected");
    // Let the start-up frames pass, so that what follows counts only renders caused by a's progress.
    await new Promise((r) => setTimeout(r, 300));
    act(() => {});
    const bBefore = renders.b ?? 0;
    const aBefore = renders.a ?? 0;
    const conn = s.conns[s.conns.length - 1];
    for (let i = 1; i <= 50; i++) conn?.socket.send(progress(2 + i, "a", i, 50));
    await settle(() => shown.a === 50, "a at 50");
    expect(events).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    // Fifty messages, a handful of frames; b never re-rendered for a's progress.
    expect((renders.a ?? 0) - aBefore).toBeLessThanOrEqual(2 * 5);
    expect(renders.b).toBe(bBefore);
    expect(s.open()).toBe(1);
    const c = clientSeen as StudioClient;
    act(() => root?.unmount());
    root = null;
    await until(() => s.open() === 0, "socket closed after unmount");
    expect(c.resources()).toEqual({ socket: false, timers: 0 });
    expect(c.jobs.listenerCount()).toBe(0);
  });

  it("useWebSocket takes the brief's config and reports error after maxReconnectAttempts", async () => {
    srv = await startServer();
    const port = srv.port;
    await srv.close();
    srv = null;
    ownerPort = port;
    state = null;
    mount(<Owner />);
    await settle(() => current()?.connectionStatus === "error", "error status");
    expect(current()?.error).toContain("gave up after 2");
    expect(current()?.lastMessage).toBeNull();
  });
});

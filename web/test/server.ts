/** A real `ws` server on loopback, scripted per test, with the studio's HTTP endpoints the client polls. */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type WebSocket, WebSocketServer } from "ws";

export interface Conn {
  url: URL;
  socket: WebSocket;
  received: string[];
  protocols: string | undefined;
}

export interface TestServer {
  port: number;
  wsUrl(path: string): string;
  conns: Conn[];
  httpRequests: string[];
  onConnect: (c: Conn) => void;
  onHttp: (path: string, req: IncomingMessage) => { status: number; body: unknown };
  /** Refuse upgrades with this HTTP status (e.g. 401), or null. */
  refuseUpgrade: number | null;
  open(): number;
  close(): Promise<void>;
}

export async function startServer(port = 0): Promise<TestServer> {
  const wss = new WebSocketServer({ noServer: true });
  let http: Server;
  const t: TestServer = {
    port: 0,
    wsUrl: (path) => `ws://127.0.0.1:${t.port}${path}`,
    conns: [],
    httpRequests: [],
    onConnect: () => {},
    onHttp: () => ({ status: 404, body: { error: { code: "not_found" } } }),
    refuseUpgrade: null,
    open: () => t.conns.filter((c) => c.socket.readyState === 1).length,
    close: () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  };
  http = createServer((req, res) => {
    const path = req.url ?? "/";
    t.httpRequests.push(path);
    const r = t.onHttp(path, req);
    res.writeHead(r.status, { "content-type": "application/json" });
    res.end(JSON.stringify(r.body));
  });
  http.on("upgrade", (req, socket, head) => {
    if (t.refuseUpgrade !== null) {
      socket.end(`HTTP/1.1 ${t.refuseUpgrade} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const c: Conn = {
        url: new URL(req.url ?? "/", "http://127.0.0.1"),
        socket: ws,
        received: [],
        protocols: req.headers["sec-websocket-protocol"],
      };
      ws.on("message", (d) => c.received.push(d.toString()));
      t.conns.push(c);
      t.onConnect(c);
    });
  });
  await new Promise<void>((resolve) => http.listen(port, "127.0.0.1", resolve));
  t.port = (http.address() as AddressInfo).port;
  return t;
}

/** Waits (real event-loop turns, bounded) until `cond` holds; works under fake timers. */
export async function until(cond: () => boolean, what = "condition", turns = 4000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
    if (i > 200) await new Promise((r) => realSleep(r, 2));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const realSetTimeout = globalThis.setTimeout;
function realSleep(r: (v: unknown) => void, ms: number) {
  realSetTimeout(r, ms);
}

/** A typed-stream event as the studio server sends it. */
export function ev(offset: number, type: string, fields: Record<string, unknown>): string {
  return JSON.stringify({ offset, time: 1_700_000_000 + offset, type, ...fields });
}

export function progress(offset: number, job: string, value: number, max = 10): string {
  return ev(offset, "progress", {
    job_id: job,
    node_id: "3",
    value,
    max,
    percentage: (value / max) * 100,
    eta_seconds: max - value,
    text: null,
  });
}

export function subscribed(
  epoch: string,
  offset: number,
  recovered: boolean,
  since: number | null,
  snapshot?: unknown[],
) {
  return JSON.stringify({ type: "subscribed", epoch, offset, recovered, since, ...(snapshot ? { snapshot } : {}) });
}

/** A synchronous frame scheduler: tests see every change at once. */
export const immediate = (cb: () => void) => {
  cb();
  return () => {};
};

export class MemoryStorage {
  data = new Map<string, string>();
  getItem(k: string) {
    return this.data.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.data.set(k, v);
  }
  removeItem(k: string) {
    this.data.delete(k);
  }
}

import { afterEach, describe, expect, it, vi } from "vitest";
import WebSocket from "ws";
import { DEFAULT_BACKOFF, reconnectDelay, reconnectDelayBounds } from "../src/client/backoff";
import { type SocketFactory, StudioClient, type StudioClientOptions } from "../src/client/client";
import { ev, MemoryStorage, progress, startServer, subscribed, type TestServer, until } from "./server";

const tick = (cb: () => void) => {
  const h = setImmediate(cb);
  return () => clearImmediate(h);
};

const servers: TestServer[] = [];
const clients: StudioClient[] = [];

async function server(port = 0) {
  const s = await startServer(port);
  servers.push(s);
  return s;
}

function client(o: StudioClientOptions) {
  const c = new StudioClient({
    WebSocket: WebSocket as unknown as SocketFactory,
    schedule: tick,
    storage: null,
    ...o,
  });
  clients.push(c);
  return c;
}

afterEach(async () => {
  vi.useRealTimers();
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
});

/** A port nothing listens on (a server opened and closed). */
async function deadPort() {
  const s = await startServer();
  const port = s.port;
  await s.close();
  return port;
}

describe("backoff", () => {
  it("grows 1 s × 1.5 up to 30 s, with jitter inside its bounds", () => {
    const expected = [1000, 1500, 2250, 3375, 5063, 7594, 11391, 17086, 25629, 30000, 30000];
    expected.forEach((base, attempt) => {
      const [lo, hi] = reconnectDelayBounds(attempt, DEFAULT_BACKOFF);
      expect(hi).toBe(base);
      expect(lo).toBe(Math.round(Math.min(30_000, 1000 * 1.5 ** attempt) * 0.7));
      for (const r of [0, 0.25, 0.5, 0.999]) {
        const d = reconnectDelay(attempt, DEFAULT_BACKOFF, () => r);
        expect(d).toBeGreaterThanOrEqual(lo);
        expect(d).toBeLessThanOrEqual(hi);
      }
    });
    // Two pages with different luck do not retry in step.
    expect(reconnectDelay(3, DEFAULT_BACKOFF, () => 0.1)).not.toBe(reconnectDelay(3, DEFAULT_BACKOFF, () => 0.9));
  });

  it("the client waits the scheduled delays between attempts (fake timers)", async () => {
    const port = await deadPort();
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    let now = 1_000_000;
    const draws = [0, 0.5, 0.999, 0.2, 0.7, 0.1, 0.9];
    let d = 0;
    const c = client({
      url: `ws://127.0.0.1:${port}/ws?clientId=t`,
      now: () => now,
      random: () => draws[d++ % draws.length] as number,
      breaker: { threshold: 1000 },
    });
    c.start();
    const seen: number[] = [];
    for (let attempt = 0; attempt < 7; attempt++) {
      await until(
        () => c.getState().nextRetryAt !== null && c.getState().attempt === attempt + 1,
        `attempt ${attempt + 1}`,
      );
      const delay = (c.getState().nextRetryAt as number) - now;
      const [lo, hi] = reconnectDelayBounds(attempt, DEFAULT_BACKOFF);
      expect(delay).toBeGreaterThanOrEqual(lo);
      expect(delay).toBeLessThanOrEqual(hi);
      seen.push(delay);
      // One millisecond early nothing happens; at the delay the next attempt is made.
      vi.advanceTimersByTime(delay - 1);
      expect(c.getState().attempt).toBe(attempt + 1);
      now += delay;
      vi.advanceTimersByTime(1);
    }
    expect(seen[0]).toBe(1000);
    expect(seen[6]).toBeLessThan(11391 + 1);
    expect(c.getState().reconnectCount).toBe(7);
  });
});

describe("circuit breaker and polling", () => {
  it("opens after more than 5 reconnects in 60 s, polls meanwhile, and closes when a trial connects", async () => {
    const port = await deadPort();
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    let now = 5_000_000;
    const c = client({ url: `ws://127.0.0.1:${port}/ws?clientId=t`, now: () => now, random: () => 0 });
    c.start();
    for (let i = 1; i <= 5; i++) {
      await until(() => c.getState().attempt === i, `attempt ${i}`);
      const delay = (c.getState().nextRetryAt as number) - now;
      now += delay;
      vi.advanceTimersByTime(delay);
    }
    await until(() => c.getState().phase === "circuit_open", "circuit open");
    const s = c.getState();
    expect(s.breakerReason).toBe("6 reconnects in 60 s");
    expect(s.nextRetryAt).toBe(now + 30_000);
    expect(s.connectionStatus).toBe("disconnected");
    // Nothing is tried while it is open.
    const srv = await server(port);
    vi.advanceTimersByTime(29_000);
    await new Promise((r) => setImmediate(r));
    expect(srv.conns.length).toBe(0);
    now += 30_000;
    vi.advanceTimersByTime(1000);
    await until(() => c.getState().phase === "connected", "trial connected");
    expect(srv.conns.length).toBe(1);
    expect(c.getState().breakerReason).toBeNull();
  });

  it("falls back to HTTP polling every 2 s when the socket is blocked, and back to the socket", async () => {
    const srv = await server();
    let job = { job_id: "j1", service: "sim", state: "running", progress: 40, created_at: 1, updated_at: 2 };
    srv.onHttp = (path) =>
      path.startsWith("/api/jobs") ? { status: 200, body: { jobs: [job], total: 1 } } : { status: 200, body: {} };
    srv.onConnect = (conn) => conn.socket.send(subscribed("E", 7, false, null, []));
    let blocked = true;
    class Blockable extends WebSocket {
      constructor(url: string, p?: string | string[]) {
        if (blocked) throw new Error("blocked by a proxy");
        super(url, p);
      }
    }
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    const c = client({
      url: srv.wsUrl("/ws/events"),
      WebSocket: Blockable as unknown as SocketFactory,
      random: () => 0,
    });
    c.start();
    vi.advanceTimersByTime(0);
    await until(() => c.jobs.get("j1")?.percentage === 40, "first poll");
    expect(c.getState().phase).toBe("polling");
    const polls = () => srv.httpRequests.filter((p) => p.startsWith("/api/jobs")).length;
    const before = polls();
    job = { ...job, progress: 60 };
    vi.advanceTimersByTime(2000);
    await until(() => polls() === before + 1, "second poll");
    await until(() => c.jobs.get("j1")?.percentage === 60, "poll applied");
    blocked = false;
    c.retryNow();
    await until(() => c.getState().phase === "connected", "socket back");
    const n = polls();
    vi.advanceTimersByTime(10_000);
    await new Promise((r) => setImmediate(r));
    expect(polls()).toBe(n);
  });

  it("a 401 says the token is wrong and stops retrying", async () => {
    const srv = await server();
    srv.refuseUpgrade = 401;
    srv.onHttp = () => ({ status: 401, body: { error: { code: "auth_failed" } } });
    const c = client({ url: srv.wsUrl("/ws/events"), token: "wrong" });
    c.start();
    await until(() => c.getState().phase === "auth_failed", "auth failed");
    expect(c.getState().connectionStatus).toBe("error");
    expect(c.getState().error).toContain("refused this token");
    await until(() => c.resources().timers === 0, "no timer left");
  });

  it("gives up after maxReconnectAttempts with an error status", async () => {
    const port = await deadPort();
    const c = client({ url: `ws://127.0.0.1:${port}/ws?clientId=t`, maxReconnectAttempts: 2, reconnectInterval: 5 });
    c.start();
    await until(() => c.getState().phase === "gave_up", "gave up");
    expect(c.getState().connectionStatus).toBe("error");
    expect(c.getState().reconnectCount).toBe(2);
  });
});

describe("messages", () => {
  it("counts malformed messages and never throws them at the page", async () => {
    const srv = await server();
    srv.onConnect = (conn) => {
      conn.socket.send(subscribed("E", 0, false, null, []));
      conn.socket.send("not json at all");
      conn.socket.send(JSON.stringify({ type: "progress", job_id: "a" }));
      conn.socket.send(JSON.stringify({ no: "type" }));
      conn.socket.send(Buffer.from([1, 2, 3]));
      conn.socket.send(progress(1, "a", 5));
    };
    const c = client({ url: srv.wsUrl("/ws/events") });
    const reported = vi.spyOn(console, "error").mockImplementation(() => {});
    c.on("progress", () => {
      throw new Error("a handler bug");
    });
    let after = 0;
    c.on("progress", () => after++);
    c.start();
    await until(() => c.jobs.get("a")?.currentStep === 5, "valid progress applied");
    // The bug is reported, and the next handler still ran.
    expect(c.handlerErrors).toBe(1);
    expect(reported).toHaveBeenCalledTimes(1);
    expect(after).toBe(1);
    reported.mockRestore();
    expect(c.getState().malformed).toBe(4);
    expect(c.getState().messagesReceived).toBe(6);
    expect(c.getState().phase).toBe("connected");
  });

  it("applies a burst with terminal events first, drops progress a terminal superseded, keeps order", async () => {
    const srv = await server();
    srv.onConnect = (conn) => {
      const burst = [
        subscribed("E", 0, false, null, []),
        ev(1, "job_started", { job_id: "a", service: "sim", cached_nodes: [] }),
        progress(2, "a", 3),
        progress(3, "a", 6),
        ev(4, "job_completed", { job_id: "a", outputs: [{ path: "/out/a/img.png" }], ui: {}, elapsed_seconds: 1 }),
        progress(5, "b", 1),
        ev(6, "job_failed", { job_id: "b", error: { code: "execution_failed", message: "boom" } }),
        progress(7, "c", 2),
        progress(8, "c", 4),
      ];
      for (const m of burst) conn.socket.send(m);
    };
    const c = client({ url: srv.wsUrl("/ws/events") });
    const order: string[] = [];
    c.on("*", (m) => order.push(`${m.type}:${"job_id" in m ? m.job_id : ""}`));
    const steps: number[] = [];
    c.on("progress", (m) => steps.push((m as { value: number }).value));
    c.start();
    await until(() => order.length === 6, "all delivered");
    const firstProgress = order.findIndex((x) => x.startsWith("progress"));
    expect(order.indexOf("job_completed:a")).toBeLessThan(firstProgress);
    expect(order.indexOf("job_failed:b")).toBeLessThan(firstProgress);
    expect(order.filter((x) => x === "progress:a" || x === "progress:b")).toEqual([]);
    // Each job's own order is kept: a's start comes before its end.
    expect(order.indexOf("job_started:a")).toBeLessThan(order.indexOf("job_completed:a"));
    expect(steps).toEqual([2, 4]);
    const a = c.jobs.get("a");
    expect(a?.status).toBe("completed");
    expect(a?.percentage).toBe(100);
    expect(a?.outputs[0]?.url).toBe(`http://127.0.0.1:${srv.port}/api/jobs/a/files/img.png`);
    expect(c.jobs.get("b")?.status).toBe("failed");
    expect(c.jobs.get("b")?.error?.message).toBe("boom");
    expect(c.position().offset).toBe(8);
  });

  it("shows which pool server has a job: job_assigned (typed, validated) and the view's server", async () => {
    const srv = await server();
    const view = { job_id: "v", service: "farm", state: "running", progress: 10, created_at: 1, updated_at: 2 };
    srv.onConnect = (conn) => {
      conn.socket.send(subscribed("E", 0, false, null, [{ ...view, server: "http://127.0.0.1:9002" }]));
      conn.socket.send(ev(1, "job_assigned", { job_id: "p", service: "farm", server: null, attempt: 1 }));
      conn.socket.send(ev(2, "job_queued", { job_id: "p", service: "farm", position: 0 }));
      // Malformed: the server must be a string or null, the job must be named.
      conn.socket.send(ev(3, "job_assigned", { job_id: "p", service: "farm", server: 9001 }));
      conn.socket.send(ev(4, "job_assigned", { service: "farm", server: "http://127.0.0.1:9001" }));
      conn.socket.send(ev(5, "job_assigned", { job_id: "p", service: "farm", server: "http://127.0.0.1:9001/" }));
      conn.socket.send(ev(6, "job_cancelled", { job_id: "q" }));
      // Nothing follows a job's end: a late assignment does not bring it back.
      conn.socket.send(ev(7, "job_assigned", { job_id: "q", service: "farm", server: "http://127.0.0.1:9003" }));
    };
    const c = client({ url: srv.wsUrl("/ws/events") });
    const assigned: (string | null)[] = [];
    c.on("job_assigned", (m) => assigned.push((m as { server: string | null }).server));
    c.start();
    await until(() => c.position().offset === 7, "all applied");
    expect(c.jobs.get("v")?.server).toBe("http://127.0.0.1:9002");
    const p = c.jobs.get("p");
    expect(p?.server).toBe("http://127.0.0.1:9001/");
    expect(p?.message).toBe("Sent to http://127.0.0.1:9001/");
    expect(p?.status).toBe("queued");
    // Handlers see every valid assignment (the late one too); only the malformed two are skipped.
    expect(assigned.length).toBe(3);
    expect(assigned.indexOf(null)).toBeLessThan(assigned.indexOf("http://127.0.0.1:9001/"));
    expect(c.getState().malformed).toBe(2);
    expect(c.jobs.get("q")?.status).toBe("cancelled");
    expect(c.jobs.get("q")?.server).toBe(null);
  });

  it("keeps the last 100 progress samples per job", async () => {
    const srv = await server();
    srv.onConnect = (conn) => {
      conn.socket.send(subscribed("E", 0, false, null, []));
      for (let i = 1; i <= 150; i++) conn.socket.send(progress(i, "a", i, 150));
    };
    const c = client({ url: srv.wsUrl("/ws/events") });
    c.start();
    await until(() => c.jobs.get("a")?.currentStep === 150, "all progress");
    const h = c.jobs.get("a")?.history ?? [];
    expect(h.length).toBe(100);
    expect(h[0]?.value).toBe(51);
    expect(h[99]?.value).toBe(150);
  });

  it("asks the server only for its jobs and tells a job's subscribers only about that job", async () => {
    const srv = await server();
    srv.onConnect = (conn) => {
      conn.socket.send(subscribed("E", 0, false, null, []));
      for (let i = 1; i <= 20; i++) conn.socket.send(progress(i, i % 2 ? "a" : "b", i, 20));
    };
    const c = client({ url: srv.wsUrl("/ws/events"), jobs: ["a", "b"] });
    let aNotified = 0;
    let cNotified = 0;
    c.jobs.subscribe("a", () => aNotified++);
    c.jobs.subscribe("c", () => cNotified++);
    c.start();
    await until(() => c.jobs.get("b")?.currentStep === 20 && aNotified > 0, "b done");
    expect(srv.conns[0]?.url.searchParams.get("jobs")).toBe("a,b");
    expect(cNotified).toBe(0);
    // Ten updates of a in one burst: one notification per frame, not ten.
    expect(aNotified).toBeGreaterThanOrEqual(1);
    expect(aNotified).toBeLessThan(10);
  });
});

describe("rendering cost", () => {
  it("tells a job's progress at most once per progress tick, and its end on the next frame", async () => {
    const srv = await server();
    srv.onConnect = (conn) => {
      conn.socket.send(subscribed("E", 0, false, null, []));
      conn.socket.send(ev(1, "job_started", { job_id: "a", service: "s" }));
    };
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    const c = client({ url: srv.wsUrl("/ws/events"), heartbeatInterval: 0 });
    const told: Array<{ status: string; step: number }> = [];
    c.jobs.subscribe("a", () => {
      const j = c.jobs.get("a");
      if (j) told.push({ status: j.status, step: j.currentStep });
    });
    c.start();
    // A new job is told on the next frame.
    await until(() => told.length === 1, "the job appears");
    expect(told[0]?.status).toBe("running");
    // Progress: the record is current at once, the subscribers hear of it on the tick (100 ms), once.
    for (let i = 1; i <= 5; i++) srv.conns[0]?.socket.send(progress(1 + i, "a", i, 10));
    await until(() => c.jobs.get("a")?.currentStep === 5, "progress applied");
    vi.advanceTimersByTime(99);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(told).toHaveLength(1);
    vi.advanceTimersByTime(1);
    await until(() => told.length === 2, "the progress tick");
    expect(told[1]).toEqual({ status: "running", step: 5 });
    // More progress, then the end before the tick: the end is told on the next frame, with the progress; the
    // tick that was due tells nothing more.
    srv.conns[0]?.socket.send(progress(7, "a", 6, 10));
    await until(() => c.jobs.get("a")?.currentStep === 6, "progress applied");
    srv.conns[0]?.socket.send(ev(8, "job_completed", { job_id: "a", outputs: [], elapsed_seconds: 1 }));
    await until(() => told.length === 3, "the end, without waiting for the tick");
    expect(told[2]?.status).toBe("completed");
    vi.advanceTimersByTime(500);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(told).toHaveLength(3);
  });
});

describe("ComfyUI's own /ws", () => {
  it("follows a prompt from ComfyUI's events and binary previews", async () => {
    const srv = await server();
    const send = (type: string, data: unknown) => JSON.stringify({ type, data });
    srv.onConnect = (conn) => {
      conn.socket.send(send("status", { status: { exec_info: { queue_remaining: 1 } }, sid: "me" }));
      conn.socket.send(send("execution_start", { prompt_id: "p1" }));
      conn.socket.send(send("execution_cached", { prompt_id: "p1", nodes: [] }));
      conn.socket.send(send("executing", { prompt_id: "p1", node: "3" }));
      conn.socket.send(send("progress", { prompt_id: "p1", node: "3", value: 5, max: 20 }));
      const frame = Buffer.alloc(8 + 3);
      frame.writeUInt32BE(1, 0);
      frame.writeUInt32BE(2, 4);
      frame.set([0x89, 0x50, 0x4e], 8);
      conn.socket.send(frame);
      const text = Buffer.concat([
        Buffer.from([0, 0, 0, 3, 0, 0, 0, 1]),
        Buffer.from("3"),
        Buffer.from("Denoising 5/20"),
      ]);
      conn.socket.send(text);
      conn.socket.send(
        send("progress_state", { prompt_id: "p1", nodes: { "3": { value: 5, max: 20, state: "running" } } }),
      );
      conn.socket.send(send("executed", { prompt_id: "p1", node: "9", output: { images: [] } }));
      // The end in a later burst (in one burst, the end supersedes the progress before it).
      setTimeout(() => {
        conn.socket.send(send("execution_success", { prompt_id: "p1" }));
        conn.socket.send(send("execution_error", { prompt_id: "p2", exception_message: "CUDA out of memory" }));
        conn.socket.send(send("progress", { value: "five" }));
      }, 50);
    };
    const c = client({ url: srv.wsUrl("/ws?clientId=me") });
    expect(c.protocol).toBe("comfyui");
    const previews: string[] = [];
    c.on("binary_preview", (m) => previews.push((m as { mime: string }).mime));
    c.start();
    await until(() => c.jobs.get("p2")?.status === "failed", "both prompts ended");
    const p1 = c.jobs.get("p1");
    expect(p1?.status).toBe("completed");
    expect(p1?.history.map((h) => h.value)).toEqual([5]);
    expect(previews).toEqual(["image/png"]);
    expect(p1?.message).toBe("Completed");
    expect(c.jobs.get("p2")?.error?.message).toBe("CUDA out of memory");
    expect(c.getState().malformed).toBe(1);
  });
});

describe("long-lived pages", () => {
  it("keeps at most 1000 finished jobs in memory, the newest, and any job someone is looking at", async () => {
    const srv = await server();
    srv.onConnect = (conn) => {
      conn.socket.send(subscribed("E", 0, false, null, []));
      let o = 0;
      for (let i = 0; i < 1200; i++) {
        conn.socket.send(ev(++o, "job_started", { job_id: `j${i}`, service: "sim" }));
        conn.socket.send(ev(++o, "job_completed", { job_id: `j${i}`, outputs: [], ui: {}, elapsed_seconds: 1 }));
      }
      conn.socket.send(ev(++o, "job_started", { job_id: "live", service: "sim" }));
    };
    const c = client({ url: srv.wsUrl("/ws/events") });
    c.jobs.subscribe("j0", () => {});
    c.start();
    await until(() => c.jobs.get("live") !== undefined, "all applied");
    expect(c.jobs.get("j1199")?.status).toBe("completed");
    expect(c.jobs.get("j0")?.status).toBe("completed");
    expect(c.jobs.get("j1")).toBeUndefined();
    expect(c.jobs.list().filter((j) => j.status === "completed").length).toBeLessThanOrEqual(1001);
  });
});

describe("resume", () => {
  it("reconnects with since=<last offset>&epoch and takes a snapshot when the server cannot replay", async () => {
    const srv = await server();
    srv.onConnect = (conn) => {
      const n = srv.conns.length;
      if (n === 1) {
        conn.socket.send(subscribed("E1", 2, false, null, []));
        conn.socket.send(ev(3, "job_started", { job_id: "a", service: "sim" }));
        conn.socket.send(progress(4, "a", 2));
        setTimeout(() => conn.socket.close(1001, "restart"), 20);
      } else if (n === 2) {
        conn.socket.send(subscribed("E1", 6, true, 4));
        conn.socket.send(progress(5, "a", 8));
        conn.socket.send(ev(6, "job_completed", { job_id: "a", outputs: [], ui: {}, elapsed_seconds: 1 }));
        setTimeout(() => conn.socket.close(1011, "crash"), 20);
      } else {
        const view = { job_id: "z", service: "sim", state: "running", progress: 30, created_at: 5, updated_at: 6 };
        conn.socket.send(subscribed("E2", 1, false, 6, [view]));
      }
    };
    const c = client({ url: srv.wsUrl("/ws/events"), reconnectInterval: 5 });
    c.start();
    await until(() => srv.conns.length === 3 && c.jobs.get("z") !== undefined, "third connection");
    expect(srv.conns[0]?.url.searchParams.get("since")).toBeNull();
    expect(srv.conns[1]?.url.searchParams.get("since")).toBe("4");
    expect(srv.conns[1]?.url.searchParams.get("epoch")).toBe("E1");
    expect(srv.conns[2]?.url.searchParams.get("since")).toBe("6");
    expect(c.jobs.get("a")?.status).toBe("completed");
    expect(c.jobs.get("z")?.percentage).toBe(30);
    expect(c.position()).toEqual({ epoch: "E2", offset: 1 });
    expect(c.getState().messagesDropped).toBe(1);
  });

  it("detects a silent link within two heartbeat intervals and reconnects", async () => {
    const srv = await server();
    srv.onConnect = (conn) => conn.socket.send(subscribed("E", 0, false, null, []));
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    let now = 0;
    const c = client({ url: srv.wsUrl("/ws/events"), heartbeatInterval: 1000, now: () => now, random: () => 0 });
    c.start();
    await until(() => c.getState().phase === "connected" && c.position().epoch === "E", "connected");
    for (let i = 0; i < 2; i++) {
      now += 1000;
      vi.advanceTimersByTime(1000);
    }
    await until(() => c.getState().phase === "reconnecting", "stale detected");
    expect(c.getState().error).toContain("stale link");
    await until(() => srv.conns[0]?.received.includes(JSON.stringify({ type: "ping" })) === true, "ping seen");
    now += 1000;
    vi.advanceTimersByTime(1000);
    await until(() => srv.conns.length === 2, "reconnected");
  });
});

describe("persistence and cleanup", () => {
  it("a reload shows the last state at once and resumes from its offset", async () => {
    const srv = await server();
    const storage = new MemoryStorage();
    srv.onConnect = (conn) => {
      if (srv.conns.length === 1) {
        conn.socket.send(subscribed("E", 0, false, null, []));
        conn.socket.send(ev(1, "job_started", { job_id: "a", service: "sim" }));
        conn.socket.send(progress(2, "a", 4));
      } else {
        conn.socket.send(subscribed("E", 2, true, 2));
      }
    };
    const first = client({ url: srv.wsUrl("/ws/events"), storage });
    first.start();
    await until(() => first.jobs.get("a")?.currentStep === 4, "progress");
    first.close();
    const second = client({ url: srv.wsUrl("/ws/events"), storage });
    expect(second.jobs.get("a")?.percentage).toBe(40);
    expect(second.jobs.get("a")?.status).toBe("running");
    second.start();
    await until(() => srv.conns.length === 2, "second connection");
    expect(srv.conns[1]?.url.searchParams.get("since")).toBe("2");
    expect(srv.conns[1]?.url.searchParams.get("epoch")).toBe("E");
  });

  it("close() leaves no socket, timer or frame callback, and queued messages go out on reconnect", async () => {
    const srv = await server();
    srv.onConnect = (conn) => conn.socket.send(subscribed("E", 0, false, null, []));
    const c = client({ url: srv.wsUrl("/ws/events"), heartbeatInterval: 50 });
    c.send({ type: "ping", queued: true });
    expect(c.getState().outbox.length).toBe(1);
    c.start();
    await until(() => srv.conns[0]?.received.some((m) => m.includes("queued")) === true, "queued sent");
    expect(c.getState().outbox.length).toBe(0);
    c.close();
    expect(c.resources()).toEqual({ socket: false, timers: 0 });
    await until(() => srv.open() === 0, "server sees the close");
    expect(c.getState().phase).toBe("closed");
  });
});

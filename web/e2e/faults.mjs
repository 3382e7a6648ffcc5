// The monitor's fault screens in headless Chromium against the real studio server: a 401 (no token, then a
// wrong one, then the right one), and the studio server stopped until the circuit breaker opens, then back, with
// the page recovering by offset. Asserts order and counts, never how fast; every wait is bounded; servers and the
// browser are always stopped.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import {
  barText,
  freePort,
  launch,
  needChromium,
  phase,
  recorder,
  rowStatus,
  sleep,
  startStudio,
  stepper,
  stopStudio,
  submit,
  until,
} from "./harness.mjs";

needChromium();
const out = mkdtempSync(join(tmpdir(), "monitor-faults-"));
const errors = [];
const { results, step } = stepper();
let browser = null;
const studios = [];

// The client's defaults (src/client/backoff.ts), which the monitor uses: the schedule this run checks.
const BACKOFF = { initial: 1000, multiplier: 1.5, max: 30_000, jitter: 0.3 };
const BREAKER = { threshold: 5, windowS: 60 };
const base = (attempt) => Math.min(BACKOFF.max, BACKOFF.initial * BACKOFF.multiplier ** attempt);

async function newPage(context) {
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    // A refused or dead socket and a 401 from fetch are logged by Chromium itself; anything else is ours.
    if (m.type() === "error" && !/WebSocket|Failed to load resource|ERR_CONNECTION_REFUSED/.test(m.text())) {
      errors.push(`console: ${m.text()}`);
    }
  });
  return page;
}

/** Every HTTP request and socket attempt the page makes to the studio server, in order. */
function traffic(page, origin) {
  const seen = [];
  page.on("request", (r) => {
    if (r.url().startsWith(origin) && !/\/assets\/|\/$|\/#/.test(r.url())) seen.push(new URL(r.url()).pathname);
  });
  page.on("websocket", (ws) => seen.push(`ws ${new URL(ws.url()).pathname}`));
  return seen;
}

/** The events a fresh subscriber gets replayed from `since` (what the server's log holds), until it is live. */
function replay(origin, since, epoch) {
  const url = `${origin.replace(/^http/, "ws")}/ws/events?since=${since}&epoch=${encodeURIComponent(epoch)}`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const events = [];
    let subscribed = null;
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error("the replay did not finish in 30 s"));
    }, 30_000);
    ws.on("message", (data) => {
      const m = JSON.parse(String(data));
      if (m.type === "subscribed") {
        subscribed = m;
        // The replay is sent right after `subscribed`; a ping round trip marks its end.
        ws.send(JSON.stringify({ type: "ping" }));
        return;
      }
      if (m.type === "pong") {
        clearTimeout(timer);
        ws.close();
        resolve({ subscribed, events });
        return;
      }
      if (typeof m.offset === "number") events.push({ type: m.type, job: m.job_id ?? null, offset: m.offset });
    });
    ws.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

try {
  browser = await launch();

  await step("a 401: the page says a token is needed, does not retry, then takes a wrong and a right one", async () => {
    const port = await freePort();
    const studio = await startStudio({ port, out: join(out, "auth"), args: ["--simulator", "--token", "s3cret"] });
    studios.push(studio);
    const context = await browser.newContext();
    try {
      await context.addInitScript(recorder);
      const page = await newPage(context);
      const asked = traffic(page, studio.url);
      await page.goto(`${studio.url}/`);
      await until("auth_failed", async () => (await phase(page)) === "auth_failed");
      assert.match(await barText(page), /needs a token \(401\)/);
      assert.equal(await page.locator('.conn input[type="password"]').count(), 1, "the bar asks for the token");
      // The services card says so too, once; it stops asking.
      await until("the services error", async () => (await page.locator(".services .err").count()) === 1);
      assert.match(await page.locator(".services .err").textContent(), /401/);
      // No storm: one socket, one probe that found the 401. Then a while with no traffic at all: the first
      // reconnect of a retrying client would come after 1 s, its polling after 2 s.
      const settled = [...asked];
      assert.deepEqual(
        settled.filter((r) => r.startsWith("ws ")),
        ["ws /ws/events"],
        `one socket: ${settled}`,
      );
      assert.equal(settled.filter((r) => r === "/api/health").length, 1, `one probe: ${settled}`);
      await sleep(6000);
      assert.deepEqual(asked, settled, "nothing more was asked while the token is wrong");
      assert.equal(await phase(page), "auth_failed");
      const sockets = await page.evaluate(() => window.__sockets.length);
      assert.equal(sockets, 1);

      // A wrong token: said so, one attempt, no retry.
      await page.fill('.conn input[type="password"]', "not-the-token");
      await page.click('.conn button[type="submit"]');
      await until("the wrong token refused", async () => /refused this token/.test((await barText(page)) ?? ""));
      assert.equal(await phase(page), "auth_failed");
      // The new client's one probe and the services card's one request (both 401) are made, then nothing.
      const count = (what) => asked.filter((r) => r === what).length;
      await until(
        "the probe and the services request",
        () => count("/api/health") === 2 && count("/api/services") === 2,
      );
      const afterWrong = [...asked];
      assert.equal(afterWrong.filter((r) => r.startsWith("ws ")).length, 2, `one more socket: ${afterWrong}`);
      await sleep(4000);
      assert.deepEqual(asked, afterWrong, "nothing more was asked with the wrong token");

      // The right one: live, and a job shows.
      await page.fill('.conn input[type="password"]', "s3cret");
      await page.click('.conn button[type="submit"]');
      await until("connected", async () => (await phase(page)) === "connected");
      const id = await submit(studio.url, { tag: "auth_ok", steps: 6, stepSeconds: 0.05, token: "s3cret" });
      await until("the job completes on the page", async () => (await rowStatus(page, id)) === "completed");
      await until("the services card", async () => (await page.locator('[data-service="simulator"]').count()) === 1);
      assert.equal(await page.locator(".services .err").count(), 0);
      // The token is kept for the next visit, and it is not in any socket URL (it travels as a sub-protocol).
      assert.equal(await page.evaluate(() => localStorage.getItem("director-link:token")), "s3cret");
      const urls = await page.evaluate(() => window.__wsUrls);
      assert.ok(
        urls.every((u) => !u.includes("s3cret")),
        `no token in socket URLs: ${urls}`,
      );
    } finally {
      await context.close();
      await stopStudio(studio);
    }
  });

  await step(
    "the studio server goes away: backoff with jitter, the circuit opens with its reason and next try, then recovery by offset",
    async () => {
      const port = await freePort();
      const dir = join(out, "circuit");
      let studio = await startStudio({ port, out: dir });
      studios.push(studio);
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      try {
        await context.addInitScript(recorder);
        const page = await newPage(context);
        await page.goto(`${studio.url}/`);
        await until("connected", async () => (await phase(page)) === "connected");
        const before = await submit(studio.url, { tag: "before_kill", steps: 6, stepSeconds: 0.05 });
        await until("the first job completes", async () => (await rowStatus(page, before)) === "completed");
        const pos = await page.evaluate(() => window.__directorLink.position());
        assert.ok(pos.epoch && pos.offset > 0, `a stream position: ${JSON.stringify(pos)}`);

        // Stopped (SIGTERM): its epoch continues, so the page can resume by offset. (After a crash the server starts
        // a new epoch and the page rebuilds from its snapshot instead: the vitest suite covers that path.)
        await stopStudio(studio, "SIGTERM");
        await until("the circuit opens", async () => (await phase(page)) === "circuit_open", 120_000);
        const text = await barText(page);
        assert.match(text, /^Circuit open \(6 reconnects in 60 s\); next try in \d+ s$/, text);
        assert.equal(await page.locator(".conn button", { hasText: "Retry now" }).count(), 1);

        // The schedule: the live socket closed, then five attempts (each scheduled with a jittered, growing
        // delay), then the sixth reconnect in 60 s opened the circuit instead of a seventh socket.
        const { sockets, states } = await page.evaluate(() => ({ sockets: window.__sockets, states: window.__states }));
        const killedAt = sockets.findIndex((s) => s.openedAt !== null && s.closedAt !== null);
        const attempts = sockets.slice(killedAt + 1);
        assert.equal(attempts.length, BREAKER.threshold, `five attempts before the circuit opened: ${sockets.length}`);
        assert.ok(
          attempts.every((s) => s.openedAt === null),
          "no attempt connected",
        );
        const retryAts = [];
        for (const s of states) {
          if (s.phase === "reconnecting" && s.nextRetryAt !== null && !retryAts.includes(s.nextRetryAt)) {
            retryAts.push(s.nextRetryAt);
          }
        }
        assert.equal(retryAts.length, BREAKER.threshold, `five scheduled tries: ${JSON.stringify(states)}`);
        const ratios = [];
        for (let k = 0; k < attempts.length; k++) {
          const closed = sockets[killedAt + k].closedAt;
          // Each try is scheduled after the previous socket closed (and, for a socket that never opened, an HTTP
          // probe found no 401), no earlier than the jittered delay's lower bound, and made at or after its time.
          const waited = retryAts[k] - closed;
          assert.ok(waited >= 0.7 * base(k) - 2, `try ${k + 1} waited ${waited} ms ≥ ${0.7 * base(k)} (no storm)`);
          assert.ok(attempts[k].at >= retryAts[k] - 2, `try ${k + 1} was made at its time`);
          ratios.push(waited / base(k));
        }
        // Jitter: the waits are not the bare schedule (each is drawn from [0.7, 1] of it; five all above 0.95 of
        // it has odds of 1 in 7776 when the probe takes no time).
        assert.ok(
          ratios.some((r) => r < 0.95),
          `jittered: ${ratios.map((r) => r.toFixed(3))}`,
        );
        console.log(`  (waits / schedule: ${ratios.map((r) => r.toFixed(3)).join(", ")})`);
        const open = states.find((s) => s.phase === "circuit_open");
        assert.equal(open.breakerReason, "6 reconnects in 60 s");
        assert.ok(open.nextRetryAt > open.at, "the next try is in the future");

        // The server comes back (same port, same data); a job runs and ends while the page has no socket.
        studio = await startStudio({ port, out: dir });
        studios.push(studio);
        const during = await submit(studio.url, { tag: "during_outage", steps: 8, stepSeconds: 0.05 });
        await until("it completes on the server", async () => {
          const j = await (await fetch(`${studio.url}/api/jobs/${during}`)).json();
          return j.state === "completed";
        });
        const stillDown = await phase(page);
        assert.ok(["circuit_open", "polling"].includes(stillDown), `no socket yet: ${stillDown}`);
        // The breaker's trial (no click): live again, resumed from the offset the page had.
        await until("live again", async () => (await phase(page)) === "connected", 120_000);
        await until("the page shows it completed", async () => (await rowStatus(page, during)) === "completed");
        const after = await page.evaluate(() => ({
          sockets: window.__sockets,
          seen: window.__seen,
          pos: window.__directorLink.position(),
        }));
        const trial = after.sockets[after.sockets.length - 1];
        assert.ok(trial.at >= open.nextRetryAt - 2, "the trial waited for the circuit's next try");
        const q = new URL(trial.url).searchParams;
        assert.ok(Number(q.get("since")) >= pos.offset, `the trial resumes by offset: ${trial.url}`);
        assert.equal(q.get("epoch"), pos.epoch);
        const subs = after.seen.filter((e) => e.type === "subscribed");
        assert.equal(subs[subs.length - 1].recovered, true, "the resume got exactly what it missed");
        assert.equal(after.pos.epoch, pos.epoch, "the same stream after the kill");

        // Nothing missed: what the page got after its last offset is what the server's log holds from there (a
        // fresh subscriber's replay), progress aside (the server may coalesce a job's progress).
        // (Sorted by offset: within one burst the page applies a job's end before other jobs' progress.)
        const mine = after.seen
          .filter((e) => e.offset !== null && e.offset > pos.offset && e.type !== "subscribed")
          .filter((e) => e.type !== "progress" && e.type !== "preview")
          .sort((a, b) => a.offset - b.offset);
        const upTo = Math.max(...mine.map((e) => e.offset));
        const log = await replay(studio.url, pos.offset, pos.epoch);
        assert.equal(log.subscribed.recovered, true);
        const logged = log.events
          .filter((e) => e.offset <= upTo && e.type !== "progress" && e.type !== "preview")
          .map((e) => `${e.offset} ${e.type} ${e.job ?? ""}`);
        assert.deepEqual(
          mine.map((e) => `${e.offset} ${e.type} ${e.job ?? ""}`),
          logged,
          "every event once",
        );
        console.log(`  (${mine.length} events after offset ${pos.offset} compared with the server's log)`);
        const types = mine.filter((e) => e.job === during).map((e) => e.type);
        assert.equal(types[0], "job_queued");
        assert.equal(types[types.length - 1], "job_completed");
        assert.equal(types.filter((t) => t === "job_completed").length, 1);
      } finally {
        await context.close();
        await stopStudio(studio);
      }
    },
  );

  assert.deepEqual(errors, [], "no uncaught error reached the console");
  console.log(`e2e faults: ${results.length} passed`);
} catch (e) {
  console.error(results.join("\n"));
  console.error(e);
  if (errors.length) console.error(errors.join("\n"));
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => {});
  for (const s of studios) await stopStudio(s);
  rmSync(out, { recursive: true, force: true });
}

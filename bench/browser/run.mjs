// The browser benchmark's driver (bench/bench_browser.py runs it; see there). In real headless Chromium against a
// real `director-link serve`: a page built on our hooks and the same page built on react-use-websocket's
// `lastMessage` pattern (and a bare-socket floor), each in a fresh context against a fresh server, take the same
// burst of progress events (J jobs, R progress updates / s over them, from external producers
// `POST /api/jobs/{id}/progress`, jobs ending throughout). Then the same again with the page's main thread blocked
// now and then (the stalled scenario). Measured per page: React commits and component renders, main-thread time
// (CDP Performance metrics), the JS heap after GC, frames received, messages the page's logic saw, and how many
// jobs the page shows completed at the end (a terminal event it missed leaves its job "running" forever).
//
//   node bench/browser/run.mjs [--runs N] [--jobs J] [--rate R] [--seconds S]
//                              [--stall-ms MS] [--stall-every MS] [--stall-seconds S] > result.json
//
// Loopback only; every wait is bounded; servers and the browser are always stopped.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import { startStudio as startStudioWith, stopStudio } from "../../web/e2e/harness.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const repo = join(here, "..", "..");
const web = join(repo, "web");
// playwright-core and Vite come from the web package (its devDependencies); this folder adds only the baseline.
const requireWeb = createRequire(join(web, "package.json"));
const { chromium } = requireWeb("playwright-core");

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const RUNS = arg("runs", 2);
const JOBS = arg("jobs", 100);
const RATE = arg("rate", 1000);
const SECONDS = arg("seconds", 20);
// The stalled scenario: the page's main thread blocked STALL_MS every STALL_EVERY ms during a burst of
// STALL_SECONDS (a heavy render elsewhere on the page, a GC, a laptop waking): messages queue up meanwhile.
const STALL_MS = arg("stall-ms", 200);
const STALL_EVERY = arg("stall-every", 2000);
const STALL_SECONDS = arg("stall-seconds", 15);
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
// `BENCH_PYTHON` (bench_browser.py sets it): `python -m director_link.cli`, the same package the driver measures.
const cli = process.env.BENCH_PYTHON
  ? [process.env.BENCH_PYTHON, "-m", "director_link.cli"]
  : [process.env.DIRECTOR_LINK_CLI ?? "director-link"];
const log = (m) => process.stderr.write(`[bench_browser] ${m}\n`);

if (!existsSync(chromiumPath)) {
  log(`no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM)`);
  process.exit(2);
}

// ---- the pages ------------------------------------------------------------------------------------------------

const dist = mkdtempSync(join(tmpdir(), "bench-browser-"));
const out = mkdtempSync(join(tmpdir(), "bench-browser-out-"));

async function buildPages() {
  await new Promise((resolve, reject) => {
    const vite = spawn(
      join(web, "node_modules", ".bin", "vite"),
      ["build", "--config", join(here, "vite.config.mjs"), "--outDir", dist],
      { cwd: here, stdio: ["ignore", "ignore", "pipe"] },
    );
    let err = "";
    vite.stderr.on("data", (d) => {
      err += d;
    });
    vite.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`vite build failed (${code}): ${err}`))));
  });
}

// ---- the studio server ------------------------------------------------------------------------------------------

const startStudio = () => startStudioWith({ port: 0, out, args: ["--database", "memory"], command: cli });

// ---- the producer -------------------------------------------------------------------------------------------------

const agent = new Agent({ keepAlive: true, maxSockets: 16 });

function post(base, path, body) {
  const u = new URL(base + path);
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(data) },
        timeout: 30_000,
      },
      (res) => {
        res.resume();
        res.on("end", () => (res.statusCode < 300 ? resolve() : reject(new Error(`POST ${path}: ${res.statusCode}`))));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`POST ${path}: no answer in 30 s`)));
    req.on("error", reject);
    req.end(data);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * RATE progress updates / s in 10 ms ticks, round robin over the jobs still running, for about SECONDS. Jobs end
 * throughout the burst, not all at the end (job j gets a share of the updates growing with j), each with its
 * `completed` in the tick after its last progress was answered: terminals arrive in the middle of other jobs'
 * progress, as on a busy farm. Returns what was sent and when.
 */
async function flood(base, prefix, forSeconds) {
  const ids = Array.from({ length: JOBS }, (_, i) => `${prefix}-${String(i).padStart(3, "0")}`);
  const total = Math.round(RATE * forSeconds);
  const weight = (JOBS * (JOBS + 1)) / 2;
  const quota = ids.map((_, j) => Math.max(1, Math.round((total * (j + 1)) / weight)));
  const done = ids.map(() => 0);
  const perTick = RATE / 100;
  const active = ids.map((_, j) => j);
  let ending = [];
  let cursor = 0;
  let sent = 0;
  let terminals = 0;
  let credit = 0;
  const t0 = performance.now();
  for (let tick = 0; active.length || ending.length; tick++) {
    credit += perTick;
    const batch = ending.map((j) =>
      post(base, `/api/jobs/${ids[j]}/progress`, { status: "completed", message: "done" }),
    );
    terminals += ending.length;
    ending = [];
    while (credit >= 1 && active.length) {
      credit -= 1;
      cursor %= active.length;
      const j = active[cursor];
      done[j] += 1;
      const pct = Math.min(99, (100 * done[j]) / (quota[j] + 1));
      batch.push(post(base, `/api/jobs/${ids[j]}/progress`, { status: "running", progress: pct, tag: "bench" }));
      sent += 1;
      if (done[j] >= quota[j]) {
        ending.push(j);
        active.splice(cursor, 1);
      } else {
        cursor += 1;
      }
    }
    if (!active.length) credit = 0;
    await Promise.all(batch);
    const wait = t0 + (tick + 1) * 10 - performance.now();
    if (wait > 0) await sleep(wait);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { sent, terminals, seconds };
}

// ---- in the page, before any script ----------------------------------------------------------------------------

/** Counts React commits (through the devtools hook React calls in production builds too) and WebSocket frames. */
const instrument = () => {
  window.__commits = 0;
  window.__frames = 0;
  window.__lastFrameAt = 0;
  window.__open = false;
  window.__REACT_DEVTOOLS_GLOBAL_HOOK__ = {
    supportsFiber: true,
    isDisabled: false,
    renderers: new Map(),
    inject(renderer) {
      this.renderers.set(1, renderer);
      return 1;
    },
    onScheduleFiberRoot() {},
    onCommitFiberRoot() {
      window.__commits += 1;
    },
    onCommitFiberUnmount() {},
    onPostCommitFiberRoot() {},
    checkDCE() {},
  };
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(url, protocols) {
      super(url, protocols);
      this.addEventListener("open", () => {
        window.__open = true;
      });
      this.addEventListener("message", () => {
        window.__frames += 1;
        window.__lastFrameAt = performance.now();
      });
    }
  };
};

// ---- one measurement ------------------------------------------------------------------------------------------------

async function until(what, fn, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await fn();
    if (v) return v;
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

const metric = (m, name) => m.metrics.find((x) => x.name === name)?.value ?? null;

async function measure(browser, variant, run, stall = false) {
  const studio = await startStudio();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    await context.addInitScript(instrument);
    await context.route(`${studio.url}/bench/**`, (route) => {
      const path = new URL(route.request().url()).pathname.replace(/^\/bench\//, "");
      const file = join(dist, path);
      if (!existsSync(file)) return route.fulfill({ status: 404, body: "not found" });
      const type = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" }[extname(file)];
      return route.fulfill({ contentType: type ?? "application/octet-stream", body: readFileSync(file) });
    });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    if (process.env.BENCH_DEBUG) page.on("console", (m) => log(`console: ${m.text()}`));
    // `ours_frame`: our page with a job's progress told on every animation frame instead of the 100 ms tick.
    const url = variant === "ours_frame" ? "ours.html?progressInterval=0" : `${variant}.html`;
    await page.goto(`${studio.url}/bench/${url}`);
    // Live: the socket is open and the server's first message arrived.
    await until("the page's socket", () => page.evaluate(() => window.__open && window.__frames > 0), 30_000);
    const cdp = await context.newCDPSession(page);
    await cdp.send("Performance.enable", { timeDomain: "threadTicks" });
    await cdp.send("HeapProfiler.enable");
    await cdp.send("HeapProfiler.collectGarbage");
    const m0 = await cdp.send("Performance.getMetrics");
    const heap0 = metric(m0, "JSHeapUsedSize");
    await page.evaluate(() => {
      window.__commits = 0;
      window.__frames = 0;
      window.__bench.tableRenders = 0;
      window.__bench.rowRenders = 0;
      window.__bench.handled = 0;
    });
    // `BENCH_PROFILE=dir`: a CPU profile of the page's main thread over the burst (open it in Chromium's DevTools).
    const profile = process.env.BENCH_PROFILE ?? null;
    if (profile) {
      await cdp.send("Profiler.enable");
      await cdp.send("Profiler.start");
    }
    const t0 = performance.now();
    let stalls = 0;
    const stallTimer = stall
      ? setInterval(() => {
          stalls += 1;
          // A task that holds the page's main thread (evaluated in the page like any script of its own).
          page
            .evaluate((ms) => {
              const end = performance.now() + ms;
              while (performance.now() < end) {
                // busy: what a heavy render elsewhere on the page does to this one
              }
            }, STALL_MS)
            .catch(() => {});
        }, STALL_EVERY)
      : null;
    const sent = await flood(studio.url, `${variant}${run}`, stall ? STALL_SECONDS : SECONDS);
    if (stallTimer) clearInterval(stallTimer);
    if (profile) {
      const { profile: p } = await cdp.send("Profiler.stop");
      writeFileSync(join(profile, `${variant}-${run}.cpuprofile`), JSON.stringify(p));
    }
    // The burst window: the steady flood and the completions; the page may still be catching up after it.
    const m1 = await cdp.send("Performance.getMetrics");
    const wall = (performance.now() - t0) / 1000;
    const c1 = await page.evaluate(() => ({
      commits: window.__commits,
      frames: window.__frames,
      tableRenders: window.__bench.tableRenders,
      rowRenders: window.__bench.rowRenders,
    }));
    // Then until it is quiet: no frame for a second, or every job shown completed and nothing more coming.
    const settleStart = performance.now();
    let lastFrames = -1;
    let still = 0;
    while (performance.now() - settleStart < 30_000) {
      const f = await page.evaluate(() => window.__frames);
      still = f === lastFrames ? still + 1 : 0;
      lastFrames = f;
      if (still >= 10) break;
      await sleep(100);
    }
    const settle = (performance.now() - settleStart) / 1000;
    const shown = await page.evaluate(() => ({
      rows: document.querySelectorAll("tr[data-job]").length,
      completed: document.querySelectorAll('tr[data-status="completed"]').length,
      commits: window.__commits,
      frames: window.__frames,
      rowRenders: window.__bench.rowRenders,
      tableRenders: window.__bench.tableRenders,
      handled: window.__bench.handled,
    }));
    await cdp.send("HeapProfiler.collectGarbage");
    const m2 = await cdp.send("Performance.getMetrics");
    const busy = (name) => (metric(m1, name) - metric(m0, name)) / wall;
    const r = {
      variant,
      run,
      scenario: stall ? "stalled" : "steady",
      stalls,
      sent: sent.sent,
      terminals_sent: sent.terminals,
      producer_rate: sent.sent / sent.seconds,
      // Messages the page's own logic was handed (ours: every stream message through the client; the baseline:
      // each `lastMessage` its effect saw) per frame the socket received.
      handled_per_frame: shown.frames ? shown.handled / shown.frames : null,
      window_seconds: wall,
      settle_seconds: settle,
      frames: shown.frames,
      frames_in_window: c1.frames,
      commits: shown.commits,
      commits_per_second: c1.commits / wall,
      component_renders_per_second: (c1.rowRenders + c1.tableRenders) / wall,
      commits_per_frame: shown.frames ? shown.commits / shown.frames : null,
      component_renders: shown.rowRenders + shown.tableRenders,
      main_thread_busy: busy("TaskDuration"),
      script_busy: busy("ScriptDuration"),
      layout_busy: busy("LayoutDuration") + busy("RecalcStyleDuration"),
      // Task time that is neither script nor style/layout: dispatching events, painting, committing frames.
      other_busy: busy("TaskOtherDuration"),
      // The renderer process's CPU, every thread (the compositor and raster too), per second of the burst.
      renderer_cpu: busy("ProcessTime"),
      heap_before_mib: heap0 / 2 ** 20,
      heap_after_mib: metric(m2, "JSHeapUsedSize") / 2 ** 20,
      rows_shown: shown.rows,
      completed_shown: shown.completed,
      terminals_missed: variant === "floor" ? null : JOBS - shown.completed,
      page_errors: errors,
    };
    log(
      `${variant}${stall ? " (stalled)" : ""} #${run}: ${r.frames} frames, ${r.commits_per_second.toFixed(0)} commits/s, ` +
        `${(r.main_thread_busy * 100).toFixed(1)} % busy, heap ${r.heap_after_mib.toFixed(1)} MiB, ` +
        `${r.completed_shown}/${JOBS} completed shown`,
    );
    await cdp.detach();
    return r;
  } finally {
    await context.close().catch(() => {});
    await stopStudio(studio);
  }
}

// ---- main -------------------------------------------------------------------------------------------------------------

let browser = null;

try {
  await buildPages();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-dev-shm-usage",
      // The pages are served through the driver's routing, which Chromium treats as a public page; their socket to
      // loopback would then be blocked by Local Network Access. Every address here is loopback.
      "--disable-features=LocalNetworkAccessChecks",
    ],
  });
  const results = [];
  for (let run = 1; run <= RUNS; run++) {
    // Alternate which page goes first, so neither always gets the fresher machine.
    // The floor (a bare socket, no React) is measured too: what merely receiving the burst costs.
    const order = run % 2 ? ["ours", "baseline", "floor", "ours_frame"] : ["baseline", "ours", "floor", "ours_frame"];
    for (const v of order) results.push(await measure(browser, v, run));
    if (STALL_MS > 0) {
      for (const v of ["ours", "baseline"]) results.push(await measure(browser, v, run, true));
    }
  }
  const monitorJs = readFileSync(join(web, "dist", "assets", "monitor.js"));
  const monitorCss = readFileSync(join(web, "dist", "assets", "monitor.css"));
  const monitorHtml = readFileSync(join(web, "dist", "index.html"));
  const bundle = {
    monitor_js_gzip_kib: gzipSync(monitorJs, { level: 9 }).length / 1024,
    monitor_total_gzip_kib:
      (gzipSync(monitorJs, { level: 9 }).length +
        gzipSync(monitorCss, { level: 9 }).length +
        gzipSync(monitorHtml, { level: 9 }).length) /
      1024,
  };
  console.log(
    JSON.stringify({
      config: {
        runs: RUNS,
        jobs: JOBS,
        rate: RATE,
        seconds: SECONDS,
        stall_ms: STALL_MS,
        stall_every_ms: STALL_EVERY,
        stall_seconds: STALL_SECONDS,
        chromium: browser.version(),
      },
      bundle,
      results,
    }),
  );
} catch (e) {
  log(String(e?.stack ?? e));
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => {});
  agent.destroy();
  rmSync(dist, { recursive: true, force: true });
  rmSync(out, { recursive: true, force: true });
}

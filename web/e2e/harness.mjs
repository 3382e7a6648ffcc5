// What the browser runs share: the studio server as a child process, Chromium, bounded waits, and the in-page
// recorder of stream events and socket attempts. Loopback only.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const repo = fileURLToPath(new URL("../..", import.meta.url));
export const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const cli =
  process.env.DIRECTOR_LINK_CLI ??
  [join(repo, ".venv/bin/director-link"), "/usr/local/bin/director-link", "/usr/bin/director-link"].find(existsSync) ??
  "director-link";

/** Exits saying why when there is no Chromium: a browser run that silently does not run proves nothing. */
export function needChromium() {
  if (!existsSync(chromiumPath)) {
    console.error(`e2e: no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM)`);
    process.exit(1);
  }
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Servers started and not yet gone: killed when this process exits, however it exits. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});
for (const sig of ["SIGINT", "SIGTERM", "SIGPIPE"]) process.on(sig, () => process.exit(1));

/** Starts `director-link serve` on `port` with `args`, writing into `out`; resolves once it listens. `command`: the
 * CLI's argv (e.g. `[python, "-m", "director_link.cli"]`). */
export function startStudio({ port, out, args = ["--simulator"], command = [cli] }) {
  const [exe, ...pre] = command;
  const child = spawn(exe, [...pre, "serve", ...args, "--port", String(port), "--out", out, "--json"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the studio server did not start in 60 s: ${stderr}`)), 60_000);
    let buf = "";
    child.stdout.on("data", (d) => {
      buf += d;
      const line = buf.split("\n").find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(timer);
        const l = JSON.parse(line);
        resolve({ child, url: l.url.replace(/\/$/, ""), simulator: (l.simulator ?? "").replace(/\/$/, "") });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the studio server exited (${code}): ${stderr}`));
    });
  });
}

/** Stops a studio server (SIGKILL after 15 s of SIGTERM); resolves once it is gone. */
export function stopStudio(s, signal = "SIGTERM") {
  return new Promise((resolve) => {
    if (s.child.exitCode !== null || s.child.signalCode !== null) return resolve();
    const kill = setTimeout(() => s.child.kill("SIGKILL"), 15_000);
    s.child.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    s.child.kill(signal);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns something truthy; a bound on a hang, not a timing claim. */
export async function until(what, fn, ms = 30_000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(50);
  }
  throw new Error(`e2e: timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

export function launch() {
  return chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-dev-shm-usage",
      // The ComfyUI step serves its page through the test's routing, which Chromium treats as a public page; its
      // socket to loopback would then be blocked by Local Network Access. Every address here is loopback.
      "--disable-features=LocalNetworkAccessChecks",
    ],
  });
}

/**
 * Runs in the page before any script: records every stream event (`window.__seen`), every socket the page
 * opens with when it was made and when it closed (`window.__wsUrls`, `window.__sockets`), and every change of the
 * client's connection state (`window.__states`). `localStorage["e2e-block-ws"] = "1"` makes sockets throw.
 */
export const recorder = () => {
  window.__seen = [];
  window.__wsUrls = [];
  window.__sockets = [];
  window.__states = [];
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(url, protocols) {
      if (localStorage.getItem("e2e-block-ws") === "1") throw new Error("WebSocket blocked by the test");
      super(url, protocols);
      const rec = { url: String(url), at: Date.now(), openedAt: null, closedAt: null };
      window.__wsUrls.push(rec.url);
      window.__sockets.push(rec);
      this.addEventListener("open", () => {
        rec.openedAt = Date.now();
      });
      this.addEventListener("close", () => {
        rec.closedAt = Date.now();
      });
    }
  };
  const hook = setInterval(() => {
    const c = window.__directorLink;
    if (!c || c.__recorded) return;
    c.__recorded = true;
    c.on("*", (m) =>
      window.__seen.push({
        type: m.type,
        job: m.job_id ?? null,
        offset: m.offset ?? null,
        recovered: m.recovered ?? null,
      }),
    );
    let last = null;
    const record = () => {
      const s = c.getState();
      const key = `${s.phase}|${s.attempt}|${s.nextRetryAt}|${s.breakerReason}`;
      if (key === last) return;
      last = key;
      window.__states.push({
        at: Date.now(),
        phase: s.phase,
        attempt: s.attempt,
        nextRetryAt: s.nextRetryAt,
        breakerReason: s.breakerReason,
        error: s.error,
      });
    };
    record();
    c.subscribe(record);
  }, 5);
  window.addEventListener("pagehide", () => clearInterval(hook));
};

/** The connection bar's phase (`data-phase`), or null while it is not on the page. */
export const phase = (page) =>
  page
    .locator(".conn")
    .getAttribute("data-phase", { timeout: 1000 })
    .catch(() => null);

/** The text the connection bar shows. */
export const barText = (page) =>
  page
    .locator(".conn-text")
    .textContent({ timeout: 1000 })
    .catch(() => null);

/** The status a job's row shows (`data-status`), or null while there is no row. */
export const rowStatus = (page, id) =>
  page
    .locator(`tr[data-job="${id}"]`)
    .getAttribute("data-status", { timeout: 1000 })
    .catch(() => null);

/** Submits the acceptance workflow (`steps` steps of `stepSeconds`); returns the job id. */
export async function submit(base, { tag, steps, stepSeconds, token = null }) {
  const r = await fetch(`${base}/api/jobs`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({
      workflow: "acceptance_progress",
      tag,
      params: { "1.steps": steps, "1.step_seconds": stepSeconds, "1.nonce": Math.random() },
    }),
  });
  const text = await r.text();
  if (r.status !== 201) throw new Error(`submit: ${r.status} ${text}`);
  return JSON.parse(text).job_id;
}

/** Runs named steps, printing one `ok` line each. */
export function stepper() {
  const results = [];
  return {
    results,
    async step(name, fn) {
      const t0 = Date.now();
      await fn();
      results.push(`ok - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      console.log(results[results.length - 1]);
    },
  };
}

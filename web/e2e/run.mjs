// End to end in headless Chromium (Debian's, driven by playwright-core) against the real studio server with its
// built-in ComfyUI simulator: a job's whole life on the monitor page, a studio-server restart mid-job, a page
// reload mid-job, and the WebSocket blocked (polling) and back. Every wait is bounded; the server and browser are
// always stopped. `E2E_SCREENSHOTS=dir` also writes the README's screenshots.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  freePort,
  launch,
  needChromium,
  phase,
  recorder,
  repo,
  rowStatus,
  startStudio as start,
  stepper,
  stopStudio,
  submit as submitJob,
  until,
} from "./harness.mjs";

const shots = process.env.E2E_SCREENSHOTS ?? null;
needChromium();
const out = mkdtempSync(join(tmpdir(), "monitor-e2e-"));
const startStudio = (port) => start({ port, out });
const submit = (base, tag, steps, stepSeconds) => submitJob(base, { tag, steps, stepSeconds });

const jobState = (page, id) =>
  page.evaluate((id) => {
    const j = window.__directorLink?.jobs.get(id);
    return j
      ? { status: j.status, percentage: j.percentage, outputs: j.outputs.length, preview: !!j.previewUrl }
      : null;
  }, id);
const errors = [];
let studio = null;
let browser = null;
/** Studio servers started for the pool step (two lending their simulators, one running the pool). */
const extra = [];
const { results, step } = stepper();

try {
  const port = await freePort();
  studio = await startStudio(port);
  const base = studio.url;
  browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript(recorder);
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (
      m.type() === "error" &&
      !/WebSocket|Failed to load resource|ERR_CONNECTION_REFUSED|blocked by the test/.test(m.text())
    ) {
      errors.push(`console: ${m.text()}`);
    }
  });

  await step("the studio server serves the monitor at / and it goes live", async () => {
    await page.goto(`${base}/`);
    await until("connected", async () => (await phase(page)) === "connected");
    await until("the simulator's service card", () => page.locator('[data-service="simulator"]').count());
  });

  await step("a job goes queued → running with progress and a preview → completed with its output link", async () => {
    const id = await submit(base, "e2e_life", 16, 0.15);
    await until("the row", async () => (await rowStatus(page, id)) !== null);
    await until("running with progress", async () => {
      const s = await jobState(page, id);
      return s?.status === "running" && s.percentage > 0;
    });
    await until("completed", async () => (await rowStatus(page, id)) === "completed");
    const s = await jobState(page, id);
    assert.equal(s.percentage, 100);
    assert.ok(s.preview, "a preview was shown");
    const types = await page.evaluate((id) => window.__seen.filter((e) => e.job === id).map((e) => e.type), id);
    const first = (t) => types.indexOf(t);
    assert.ok(
      first("job_queued") >= 0 && first("job_queued") < first("job_started"),
      `queued before started: ${types}`,
    );
    assert.ok(first("job_started") < first("progress"), `started before progress: ${types}`);
    assert.ok(first("preview") > 0, `a preview event: ${types}`);
    assert.equal(types.filter((t) => t === "job_completed").length, 1);
    assert.equal(types[types.length - 1], "job_completed");
    const link = page.locator(`tr[data-job="${id}"] a.output`).first();
    const href = await link.getAttribute("href");
    const r = await fetch(href);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "image/png");
    // The job page: progress, outputs, timings.
    await page.goto(`${base}/#/job/${id}`);
    await until(
      "the job page",
      async () => (await page.locator(`section.job-page[data-status="completed"]`).count()) === 1,
    );
    assert.equal(await page.locator("section.job-page a.output").count(), 1);
    if (shots) await page.screenshot({ path: join(shots, "monitor-job.png") });
    await page.goto(`${base}/#/`);
  });

  await step("the studio server restarts mid-job: the page resumes by offset and shows the final state", async () => {
    const id = await submit(base, "e2e_restart", 60, 0.1);
    await until("running", async () => (await jobState(page, id))?.status === "running");
    const before = await page.evaluate(() => window.__directorLink.position());
    await stopStudio(studio, "SIGTERM");
    await until("the page notices", async () =>
      ["reconnecting", "connecting", "circuit_open", "polling"].includes(await phase(page)),
    );
    studio = await startStudio(port);
    await until("live again", async () => (await phase(page)) === "connected", 60_000);
    const server = await until(
      "the job ends on the server",
      async () => {
        const r = await fetch(`${base}/api/jobs/${id}`);
        const j = await r.json();
        return ["completed", "failed", "cancelled"].includes(j.state) ? j : null;
      },
      60_000,
    );
    await until(`the page shows ${server.state}`, async () => (await rowStatus(page, id)) === server.state);
    const subs = await page.evaluate(() => window.__seen.filter((e) => e.type === "subscribed"));
    const last = subs[subs.length - 1];
    const after = await page.evaluate(() => window.__directorLink.position());
    assert.equal(after.epoch, before.epoch, "a clean stop keeps the stream's epoch");
    assert.equal(last.recovered, true, "the reconnect got exactly what it missed");
    const urls = await page.evaluate(() => window.__wsUrls);
    assert.match(urls[urls.length - 1], /since=\d+/);
    // No duplicate across the restart (bursts may apply a terminal event before progress, so order is not checked
    // here; the vitest suite checks it), and every resume was recovered: nothing missed.
    const offsets = await page.evaluate(() =>
      window.__seen.filter((e) => e.offset !== null && e.type !== "subscribed").map((e) => e.offset),
    );
    assert.equal(new Set(offsets).size, offsets.length, "no event delivered twice");
    assert.ok(
      subs.slice(1).every((s) => s.recovered === true),
      "every resume recovered",
    );
    const terminal = await page.evaluate(
      (id) =>
        window.__seen
          .filter((e) => e.job === id && /^job_(completed|failed|cancelled)$/.test(e.type))
          .map((e) => e.type),
      id,
    );
    assert.deepEqual(terminal, [`job_${server.state}`], "exactly one terminal event, the server's");
    console.log(`  (job ${id.slice(0, 8)} ended ${server.state}: ${server.message})`);
  });

  await step("a reload mid-job shows the last state at once and resumes from its offset", async () => {
    const id = await submit(base, "e2e_reload", 40, 0.1);
    await until("running", async () => (await jobState(page, id))?.percentage > 5);
    const seenBefore = (await jobState(page, id)).percentage;
    await page.reload({ waitUntil: "domcontentloaded" });
    const restored = await until("the restored row", () => jobState(page, id));
    assert.ok(
      restored.percentage >= Math.min(seenBefore, 99) - 1e-9 || restored.status !== "running",
      "last known progress at once",
    );
    const urls = await page.evaluate(() => window.__wsUrls);
    assert.match(urls[0], /since=\d+/, "the first socket after the reload resumes by offset");
    await until("completed", async () => (await rowStatus(page, id)) === "completed", 60_000);
  });

  await step("the WebSocket is blocked: the page polls every 2 s, then returns to the socket", async () => {
    await page.evaluate(() => localStorage.setItem("e2e-block-ws", "1"));
    await page.reload({ waitUntil: "domcontentloaded" });
    await until("polling", async () => ["polling", "circuit_open"].includes(await phase(page)));
    const id = await submit(base, "e2e_poll", 20, 0.1);
    await until("the polled job completes", async () => (await rowStatus(page, id)) === "completed", 60_000);
    if (shots) await page.screenshot({ path: join(shots, "monitor-polling.png") });
    await page.evaluate(() => localStorage.removeItem("e2e-block-ws"));
    // "Retry now" (unless the client's own scheduled try got there first). The bar re-renders each second (its
    // countdown): click without waiting for the button to hold still.
    const retry = page.locator(".conn button", { hasText: "Retry now" });
    let clicked = false;
    await until("live again", async () => {
      if ((await phase(page)) === "connected") return true;
      if (!clicked && (await retry.count()) > 0) {
        clicked = await retry.dispatchEvent("click", undefined, { timeout: 1000 }).then(
          () => true,
          () => false,
        );
      }
      return false;
    });
  });

  await step("the client connected straight to the simulator's ComfyUI /ws follows a prompt to its end", async () => {
    const sim = studio.simulator;
    assert.ok(sim, "the studio server names its simulator");
    // ComfyUI lets a browser in only from its own origin (as the real one does): the page is served there, with the
    // client bundle, by the test's routing; the socket and the prompt are real.
    const wsUrl = `${sim.replace(/^http/, "ws")}/ws?clientId=e2e-browser`;
    const comfyPage = await context.newPage();
    comfyPage.on("pageerror", (e) => errors.push(`pageerror (ComfyUI page): ${e.message}`));
    await comfyPage.route(`${sim}/e2e-client.html`, (route) =>
      route.fulfill({
        contentType: "text/html",
        body: '<!doctype html><script type="module" src="/e2e-client.js"></script>',
      }),
    );
    await comfyPage.route(`${sim}/e2e-client.js`, (route) =>
      route.fulfill({ contentType: "text/javascript", body: readFileSync(join(repo, "web/dist/assets/monitor.js")) }),
    );
    await comfyPage.goto(`${sim}/e2e-client.html`);
    await until("the client bundle", () => comfyPage.evaluate(() => !!window.DirectorLink));
    await comfyPage.evaluate((url) => {
      window.__comfy = new window.DirectorLink.StudioClient({ url, storage: null, heartbeatInterval: 0 });
      window.__comfyPreviews = 0;
      window.__comfyMalformed = [];
      window.__comfy.on("binary_preview", () => {
        window.__comfyPreviews += 1;
      });
      window.__comfy.start();
    }, wsUrl);
    await until("connected to ComfyUI", () =>
      comfyPage.evaluate(() => window.__comfy.getState().phase === "connected"),
    );
    const workflow = JSON.parse(
      readFileSync(join(repo, "python/director_link/templates/acceptance_progress.json"), "utf8"),
    );
    workflow["1"].inputs.steps = 12;
    workflow["1"].inputs.step_seconds = 0.1;
    workflow["1"].inputs.nonce = Math.random();
    const r = await fetch(`${sim}/prompt`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: workflow, client_id: "e2e-browser" }),
    });
    assert.equal(r.status, 200);
    const promptId = (await r.json()).prompt_id;
    const job = await until("the prompt completes in the page", () =>
      comfyPage.evaluate((id) => {
        const j = window.__comfy.jobs.get(id);
        return j?.status === "completed"
          ? {
              steps: j.history.length,
              preview: window.__comfyPreviews,
              malformed: window.__comfy.getState().malformed,
              why: window.__comfy.lastMalformed,
            }
          : null;
      }, promptId),
    );
    assert.ok(job.steps > 0, "progress was seen");
    assert.ok(job.preview > 0, "binary previews were decoded");
    assert.equal(job.malformed, 0, `every ComfyUI message passed validation (${job.why})`);
    await comfyPage.evaluate(() => window.__comfy.close());
    await comfyPage.close();
  });

  await step("a pool: the page shows its servers, and which one runs a job", async () => {
    // Two studio servers lend their built-in simulators; a third runs them as the pool `farm`.
    for (let i = 0; i < 2; i++) extra.push(await start({ port: await freePort(), out }));
    const servers = extra.map((s) => s.simulator);
    const pooled = await start({ port: await freePort(), out, args: ["--pool", `farm=${servers.join(",")}`] });
    extra.push(pooled);
    await page.goto(`${pooled.url}/`);
    await until("connected to the pool's studio", async () => (await phase(page)) === "connected");
    await until("a line per pool server", async () => {
      const shown = await page
        .locator('[data-pool="farm"] [data-pool-server]')
        .evaluateAll((els) => els.map((e) => e.getAttribute("data-pool-server")));
      return shown.length === 2 && servers.every((u) => shown.some((s) => s.replace(/\/$/, "") === u));
    });
    const r = await fetch(`${pooled.url}/api/jobs`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        workflow: "acceptance_progress",
        service: "farm",
        tag: "e2e_pool",
        params: { "1.steps": 20, "1.step_seconds": 0.1, "1.nonce": Math.random() },
      }),
    });
    assert.equal(r.status, 201, await r.clone().text());
    const id = (await r.json()).job_id;
    const shownServer = await until("the row names the server", async () => {
      const s = await page
        .locator(`tr[data-job="${id}"] [data-server]`)
        .getAttribute("data-server", { timeout: 1000 })
        .catch(() => null);
      return s ? s : null;
    });
    assert.ok(servers.includes(shownServer.replace(/\/$/, "")), `the row's server ${shownServer} is one of ${servers}`);
    await until("completed", async () => (await rowStatus(page, id)) === "completed");
    const view = await (await fetch(`${pooled.url}/api/jobs/${id}`)).json();
    assert.equal(view.server, shownServer, "the row shows the server the studio says ran it");
    const types = await page.evaluate((id) => window.__seen.filter((e) => e.job === id).map((e) => e.type), id);
    assert.ok(types.includes("job_assigned"), `the stream carried job_assigned: ${types}`);
    await page.goto(`${base}/`);
  });

  if (shots) {
    await step("screenshot of the monitor mid-batch", async () => {
      for (let i = 0; i < 5; i++) await submit(base, `shot_0${i + 1}0`, 40 + i * 10, 0.12);
      await until("several running", async () => (await page.locator('tr[data-status="running"]').count()) >= 1);
      await new Promise((r) => setTimeout(r, 1500));
      await page.screenshot({ path: join(shots, "monitor.png") });
    });
  }

  assert.deepEqual(errors, [], "no uncaught error reached the console");
  console.log(`e2e: ${results.length} passed`);
} catch (e) {
  console.error(results.join("\n"));
  console.error(e);
  if (errors.length) console.error(errors.join("\n"));
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => {});
  if (studio) await stopStudio(studio);
  for (const s of extra) await stopStudio(s);
  rmSync(out, { recursive: true, force: true });
}

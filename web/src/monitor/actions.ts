/** Submit, cancel and re-run, over the studio server's HTTP API. Errors come back as text for the page. */
import type { StudioClient } from "../client/client";

const SUBMISSIONS_KEY = "director-link:submissions";
const KEEP = 200;

export interface Submission {
  workflow: unknown;
  params?: Record<string, unknown>;
  tag?: string;
  service?: string;
}

function submissions(): Record<string, Submission> {
  try {
    return JSON.parse(localStorage.getItem(SUBMISSIONS_KEY) ?? "{}") as Record<string, Submission>;
  } catch {
    return {};
  }
}

/** What this page submitted for a job (re-run needs the workflow; the server keeps only the job's state). */
export function submissionOf(jobId: string): Submission | null {
  return submissions()[jobId] ?? null;
}

function remember(jobId: string, s: Submission): void {
  const all = submissions();
  all[jobId] = s;
  const ids = Object.keys(all);
  for (const id of ids.slice(0, Math.max(0, ids.length - KEEP))) delete all[id];
  try {
    localStorage.setItem(SUBMISSIONS_KEY, JSON.stringify(all));
  } catch {
    // Storage full: re-run is then unavailable for this job, nothing else changes.
  }
}

async function errorText(r: Response): Promise<string> {
  try {
    const body = (await r.json()) as { error?: { code?: string; message?: string } };
    if (body.error?.message) return `${body.error.message} (${r.status} ${body.error.code ?? ""})`.trim();
  } catch {
    // Not JSON: the status says enough.
  }
  return `the studio server answered ${r.status}`;
}

export async function submit(client: StudioClient, s: Submission): Promise<{ jobId?: string; error?: string }> {
  try {
    const r = await client.request("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(s),
    });
    if (!r.ok) return { error: await errorText(r) };
    const body = (await r.json()) as { job_id?: string };
    if (!body.job_id) return { error: "the studio server did not say the job's id" };
    remember(body.job_id, s);
    client.jobs.describe(body.job_id, s.service ?? null, s.tag ?? null);
    return { jobId: body.job_id };
  } catch (e) {
    return { error: `could not reach the studio server: ${e instanceof Error ? e.message : String(e)}` };
  }
}

export async function cancel(client: StudioClient, jobId: string): Promise<string | null> {
  try {
    const r = await client.request(`/api/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
    return r.ok ? null : await errorText(r);
  } catch (e) {
    return `could not reach the studio server: ${e instanceof Error ? e.message : String(e)}`;
  }
}

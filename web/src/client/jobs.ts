/**
 * The jobs the client knows, built from whichever protocol it speaks. Each job is an immutable record replaced on
 * change, so a subscriber to one job is told only when that job changed, at most once per frame.
 */
import type {
  BriefProgress,
  ComfyEvent,
  ComfyPreview,
  ComfyProgressText,
  JobError,
  JobView,
  StreamEvent,
  SystemStatus,
} from "./schemas";

export type JobStatus = "queued" | "running" | "completed" | "failed" | "cancelled";

export const TERMINAL: ReadonlySet<JobStatus> = new Set(["completed", "failed", "cancelled"]);

/** Finished jobs kept in memory (a page left open for days must not grow without bound); the oldest go first. */
export const FINISHED_LIMIT = 1000;

/** How many progress samples a job keeps (for a sparkline or rate analytics). */
export const HISTORY_LIMIT = 100;

export interface ProgressSample {
  /** Epoch ms when it arrived. */
  at: number;
  value: number;
  max: number;
  percentage: number;
  node: string | null;
}

export interface OutputLink {
  name: string;
  url: string;
  path: string | null;
}

export interface JobProgress {
  jobId: string;
  service: string | null;
  tag: string | null;
  status: JobStatus;
  /** For a job of a pool: the URL of the server that has it; null when it waits for one, or is not a pool's. */
  server: string | null;
  /** Overall 0–100; never goes back while the job runs. */
  percentage: number;
  /** The running node's own 0–100. */
  nodePercentage: number;
  currentStep: number;
  totalSteps: number;
  currentNode: string | null;
  currentNodeType: string | null;
  /** Seconds left, or null when unknown. */
  eta: number | null;
  queuePosition: number | null;
  message: string;
  outputs: OutputLink[];
  error: JobError | null;
  previewUrl: string | null;
  /** Epoch ms. */
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
  history: ProgressSample[];
}

/** The brief's `IProgressState`. */
export interface IProgressState {
  currentStep: number;
  totalSteps: number;
  percentage: number;
  currentNode: string | null;
  eta: number | null;
}

export interface JobIndexEntry {
  jobId: string;
  status: JobStatus;
  tag: string | null;
  service: string | null;
}

export interface JobStoreOptions {
  /** Turns a server path (`/api/jobs/…`) into a link the page can open (base URL, token). */
  link: (path: string) => string;
  now: () => number;
  schedule: (notify: () => void) => () => void;
  /**
   * How often a job's progress alone (percentage, step, node, ETA, preview) reaches subscribers, ms; 0 = every
   * frame. A job that appears, changes status, tag or service is told on the next frame, with its progress.
   * Painting the page is what costs under a burst, not the hooks: a progress bar does not need 60 updates a second.
   */
  progressInterval?: number;
}

type Listener = () => void;

function basename(path: string): string {
  const parts = path.split(/[\\/]/);
  return parts[parts.length - 1] || path;
}

/** The server drops a job's preview when it ends: its first image output takes the thumbnail's place. */
function firstImage(outputs: ReadonlyArray<OutputLink>): string | null {
  return outputs.find((o) => /\.(png|jpe?g|webp|gif)$/i.test(o.name) && o.url)?.url ?? null;
}

function statusOfState(state: string): JobStatus {
  switch (state) {
    case "running":
    case "processing":
      return "running";
    case "completed":
    case "failed":
    case "cancelled":
      return state;
    default:
      return "queued";
  }
}

export function emptyJob(jobId: string, now: number): JobProgress {
  return {
    jobId,
    service: null,
    tag: null,
    status: "queued",
    server: null,
    percentage: 0,
    nodePercentage: 0,
    currentStep: 0,
    totalSteps: 0,
    currentNode: null,
    currentNodeType: null,
    eta: null,
    queuePosition: null,
    message: "",
    outputs: [],
    error: null,
    previewUrl: null,
    createdAt: now,
    startedAt: null,
    finishedAt: null,
    updatedAt: now,
    history: [],
  };
}

export class JobStore {
  private jobs = new Map<string, JobProgress>();
  private byJob = new Map<string, Set<Listener>>();
  private listListeners = new Set<Listener>();
  private dirty = new Set<string>();
  private listDirty = false;
  private cancelFlush: (() => void) | null = null;
  /** Jobs whose progress alone changed: told on the next progress tick. */
  private progressDirty = new Set<string>();
  private progressTimer: ReturnType<typeof setTimeout> | null = null;
  private listCache: JobProgress[] | null = null;
  private indexCache: JobIndexEntry[] | null = null;
  private indexListeners = new Set<Listener>();
  private indexDirty = false;
  /** ComfyUI: when a node's first step was seen, for an ETA from the step rate. */
  private stepClock = new Map<string, { node: string | null; at: number; value: number }>();
  /** ComfyUI: the prompt running now (previews without metadata belong to it). */
  private comfyRunning: string | null = null;
  /** ComfyUI's jobs map prompt ids; the client id decides which are ours (all, when watching). */
  readonly renders = { notifications: 0 };
  /** Services as the stream reports them: state and queue depth. */
  services = new Map<string, { state: string; reason: string | null; queue: number | null }>();

  constructor(private readonly o: JobStoreOptions) {}

  get(jobId: string): JobProgress | undefined {
    return this.jobs.get(jobId);
  }

  /** Every job, newest first (one array per change, so it can be a snapshot). */
  list(): JobProgress[] {
    if (!this.listCache) {
      this.listCache = [...this.jobs.values()].sort((a, b) => b.createdAt - a.createdAt);
    }
    return this.listCache;
  }

  subscribe(jobId: string, listener: Listener): () => void {
    let set = this.byJob.get(jobId);
    if (!set) {
      set = new Set();
      this.byJob.set(jobId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.byJob.get(jobId) === set) this.byJob.delete(jobId);
    };
  }

  subscribeList(listener: Listener): () => void {
    this.listListeners.add(listener);
    return () => this.listListeners.delete(listener);
  }

  /** Listeners still attached (tests check that unmounting leaves none). */
  listenerCount(): number {
    let n = this.listListeners.size + this.indexListeners.size;
    for (const s of this.byJob.values()) n += s.size;
    return n;
  }

  /** Which jobs exist, with the fields lists filter on; a new array only when one of those changed. */
  index(): JobIndexEntry[] {
    if (!this.indexCache) {
      this.indexCache = this.list().map((j) => ({ jobId: j.jobId, status: j.status, tag: j.tag, service: j.service }));
    }
    return this.indexCache;
  }

  subscribeIndex(listener: Listener): () => void {
    this.indexListeners.add(listener);
    return () => this.indexListeners.delete(listener);
  }

  /** Replaces one job's record and marks it for the next frame's notification. */
  private put(next: JobProgress): void {
    const before = this.jobs.get(next.jobId);
    const lifecycle =
      !before ||
      before.status !== next.status ||
      before.tag !== next.tag ||
      before.service !== next.service ||
      before.server !== next.server;
    if (lifecycle) {
      this.indexCache = null;
      this.indexDirty = true;
    }
    this.jobs.set(next.jobId, next);
    if (!before) this.evictFinished();
    this.listDirty = true;
    this.listCache = null;
    const every = this.o.progressInterval ?? 0;
    if (every > 0 && !lifecycle) {
      // Progress only: the record is current now (a render for any other reason reads it); the notification
      // waits for the progress tick, which tells every job that moved at once.
      if (!this.dirty.has(next.jobId)) this.progressDirty.add(next.jobId);
      if (!this.progressTimer && !this.cancelFlush) {
        this.progressTimer = setTimeout(() => {
          this.progressTimer = null;
          if (!this.cancelFlush) this.cancelFlush = this.o.schedule(() => this.flush());
        }, every);
      }
      return;
    }
    this.progressDirty.delete(next.jobId);
    this.dirty.add(next.jobId);
    if (!this.cancelFlush) this.cancelFlush = this.o.schedule(() => this.flush());
  }

  private evictFinished(): void {
    if (this.jobs.size <= FINISHED_LIMIT) return;
    const finished = [...this.jobs.values()].filter((j) => TERMINAL.has(j.status));
    if (finished.length <= FINISHED_LIMIT) return;
    finished.sort((a, b) => a.createdAt - b.createdAt);
    for (const j of finished.slice(0, finished.length - FINISHED_LIMIT)) {
      if (this.byJob.has(j.jobId)) continue; // someone is looking at it
      this.jobs.delete(j.jobId);
    }
    this.indexCache = null;
    this.indexDirty = true;
  }

  /** Notifies every changed job's subscribers once. */
  flush(): void {
    this.cancelFlush?.();
    this.cancelFlush = null;
    // Whatever progress is waiting goes with this flush; the next progress starts a new tick.
    if (this.progressTimer) clearTimeout(this.progressTimer);
    this.progressTimer = null;
    const dirty = [...this.dirty, ...this.progressDirty];
    this.dirty.clear();
    this.progressDirty.clear();
    for (const id of dirty) {
      const set = this.byJob.get(id);
      if (!set) continue;
      for (const l of [...set]) {
        this.renders.notifications += 1;
        l();
      }
    }
    if (this.listDirty) {
      this.listDirty = false;
      for (const l of [...this.listListeners]) l();
    }
    if (this.indexDirty) {
      this.indexDirty = false;
      for (const l of [...this.indexListeners]) l();
    }
  }

  /** Stops the pending notification (the client is closing). */
  dispose(): void {
    this.cancelFlush?.();
    this.cancelFlush = null;
    if (this.progressTimer) clearTimeout(this.progressTimer);
    this.progressTimer = null;
    this.progressDirty.clear();
    this.dirty.clear();
    this.listDirty = false;
  }

  private edit(jobId: string, change: (j: JobProgress) => JobProgress | null, create = true): void {
    const now = this.o.now();
    const known = this.jobs.get(jobId);
    if (!known && !create) return;
    const before = known ?? emptyJob(jobId, now);
    const after = change(before);
    if (!after) return;
    this.put({ ...after, updatedAt: now });
  }

  /** A running job's update: ignored once the job has ended (a late frame never revives it). */
  private live(jobId: string, change: (j: JobProgress) => JobProgress): void {
    this.edit(jobId, (j) => (TERMINAL.has(j.status) ? null : change(j)));
  }

  private sample(j: JobProgress, value: number, max: number, percentage: number, node: string | null) {
    const history = j.history.length >= HISTORY_LIMIT ? j.history.slice(1 - HISTORY_LIMIT) : j.history.slice();
    history.push({ at: this.o.now(), value, max, percentage, node });
    return history;
  }

  private outputLinks(jobId: string, outputs: ReadonlyArray<{ path: string }>): OutputLink[] {
    return outputs.map((o) => {
      const name = basename(o.path);
      return { name, path: o.path, url: this.o.link(`/api/jobs/${jobId}/files/${encodeURIComponent(name)}`) };
    });
  }

  // ---- the studio server's typed stream ---------------------------------------------------------------

  applyStream(e: StreamEvent): void {
    const now = this.o.now();
    switch (e.type) {
      case "job_queued":
        return this.live(e.job_id, (j) => ({
          ...j,
          service: e.service,
          status: "queued",
          queuePosition: e.position ?? null,
          message: e.pending_connection ? "Waiting for the server" : "Queued",
        }));
      case "job_started":
        return this.live(e.job_id, (j) => ({
          ...j,
          service: e.service,
          status: "running",
          queuePosition: null,
          startedAt: j.startedAt ?? now,
          message: "Generation in progress",
        }));
      case "job_assigned":
        // Before the server's own job_queued: which server of the pool has it, or that it waits for one.
        return this.edit(e.job_id, (j) =>
          TERMINAL.has(j.status)
            ? null
            : {
                ...j,
                service: e.service,
                server: e.server,
                message: e.server ? `Sent to ${e.server}` : "Waiting for a server",
              },
        );
      case "node_started":
        return this.live(e.job_id, (j) => ({
          ...j,
          status: "running",
          startedAt: j.startedAt ?? now,
          currentNode: e.node_id,
          currentNodeType: e.node_type ?? null,
          nodePercentage: 0,
          currentStep: 0,
          totalSteps: 0,
          eta: null,
          message: e.node_type ? `Running ${e.node_type} (node ${e.node_id})` : `Running node ${e.node_id}`,
        }));
      case "progress":
        return this.live(e.job_id, (j) => {
          const pct = Math.min(100, Math.max(0, e.percentage));
          return {
            ...j,
            status: "running",
            startedAt: j.startedAt ?? now,
            nodePercentage: pct,
            percentage: Math.max(j.percentage, Math.min(pct, 99)),
            currentStep: e.value,
            totalSteps: e.max,
            currentNode: e.node_id ?? j.currentNode,
            eta: e.eta_seconds ?? null,
            queuePosition: null,
            message: e.text || j.message || "Generation in progress",
            history: this.sample(j, e.value, e.max, pct, e.node_id ?? null),
          };
        });
      case "preview":
        return this.live(e.job_id, (j) => ({
          ...j,
          previewUrl: this.o.link(`${e.url ?? `/api/jobs/${e.job_id}/preview`}?v=${e.offset}`),
        }));
      case "job_completed":
        return this.edit(e.job_id, (j) =>
          TERMINAL.has(j.status)
            ? null
            : {
                ...j,
                status: "completed",
                percentage: 100,
                nodePercentage: 100,
                eta: null,
                currentNode: null,
                queuePosition: null,
                outputs: this.outputLinks(e.job_id, e.outputs),
                previewUrl: firstImage(this.outputLinks(e.job_id, e.outputs)),
                finishedAt: now,
                message: "Completed",
              },
        );
      case "job_failed":
        return this.edit(e.job_id, (j) =>
          TERMINAL.has(j.status)
            ? null
            : {
                ...j,
                status: "failed",
                eta: null,
                currentNode: null,
                error: e.error,
                message: e.error.message,
                previewUrl: null,
                finishedAt: now,
              },
        );
      case "job_cancelled":
        return this.edit(e.job_id, (j) =>
          TERMINAL.has(j.status)
            ? null
            : {
                ...j,
                status: "cancelled",
                eta: null,
                currentNode: null,
                message: "Cancelled",
                previewUrl: null,
                finishedAt: now,
              },
        );
      case "service_state_changed": {
        const s = this.services.get(e.service);
        this.services.set(e.service, { state: e.state, reason: e.reason ?? null, queue: s?.queue ?? null });
        return;
      }
      case "queue_changed": {
        const s = this.services.get(e.service);
        this.services.set(e.service, {
          state: s?.state ?? "connected",
          reason: s?.reason ?? null,
          queue: e.queue_remaining,
        });
        return;
      }
      default:
        return;
    }
  }

  /** Jobs as the server holds them (a snapshot, or a poll): the server's word replaces ours. */
  applyViews(views: ReadonlyArray<JobView>): void {
    for (const v of views) {
      this.edit(v.job_id, (j) => {
        const status = statusOfState(v.state);
        // A poll that lags the stream never takes a job back (a finished one, or a running one to queued).
        if (TERMINAL.has(j.status) && !TERMINAL.has(status)) return null;
        if (j.status === "running" && status === "queued") return null;
        const outputs = v.files
          ? v.files.map((f) => ({ name: f.name, url: this.o.link(f.url), path: null }))
          : this.outputLinks(v.job_id, v.outputs ?? []);
        const preview = TERMINAL.has(status)
          ? firstImage(outputs)
          : v.preview_url != null
            ? this.o.link(`${v.preview_url}?v=${v.preview_offset ?? 0}`)
            : v.preview_offset != null
              ? this.o.link(`/api/jobs/${v.job_id}/preview?v=${v.preview_offset}`)
              : j.previewUrl;
        return {
          ...j,
          service: v.service,
          tag: v.tag ?? null,
          status,
          server: v.server ?? null,
          percentage: status === "completed" ? 100 : Math.max(status === "running" ? j.percentage : 0, v.progress),
          nodePercentage: v.node_progress ?? j.nodePercentage,
          currentNode: v.current_node ?? null,
          currentNodeType: v.current_node_type ?? null,
          queuePosition: v.queue_position ?? null,
          eta: v.eta_seconds ?? null,
          message: v.message ?? j.message,
          outputs: outputs.length ? outputs : j.outputs,
          error: v.error ?? null,
          previewUrl: preview,
          createdAt: v.created_at * 1000,
          startedAt: v.started_at != null ? v.started_at * 1000 : null,
          finishedAt: v.finished_at != null ? v.finished_at * 1000 : null,
        };
      });
    }
  }

  /** Tag and service of a job the page submitted (before its first event). */
  describe(jobId: string, service: string | null, tag: string | null): void {
    this.edit(jobId, (j) => ({ ...j, service: j.service ?? service, tag: j.tag ?? tag }));
  }

  // ---- the brief's messages ---------------------------------------------------------------------------------

  applyBrief(m: BriefProgress | SystemStatus): void {
    if (m.type === "progress") {
      const status = statusOfState(m.status);
      return this.edit(m.job_id, (j) => {
        if (TERMINAL.has(j.status)) return null;
        return {
          ...j,
          status,
          percentage: Math.max(j.percentage, m.progress),
          eta: m.estimated_remaining ?? null,
          message: m.message ?? j.message,
          outputs: m.output_path ? [{ name: basename(m.output_path), url: "", path: m.output_path }] : j.outputs,
          finishedAt: TERMINAL.has(status) ? this.o.now() : null,
          history: status === "running" ? this.sample(j, m.progress, 100, m.progress, null) : j.history,
        };
      });
    }
    for (const r of m.recent_jobs) {
      this.edit(r.job_id, (j) => {
        const status = statusOfState(r.status);
        if (TERMINAL.has(j.status)) return null;
        if (j.status === status && j.percentage === r.progress && j.currentNode === (r.current_node ?? null)) {
          return null;
        }
        return {
          ...j,
          status,
          service: r.service ?? j.service,
          tag: r.tag ?? j.tag,
          percentage: Math.max(j.percentage, r.progress),
          currentNode: r.current_node ?? null,
          eta: r.estimated_remaining ?? null,
          message: r.message ?? j.message,
        };
      });
    }
  }

  // ---- ComfyUI's own events ------------------------------------------------------------------------------------

  applyComfy(m: ComfyEvent | ComfyPreview | ComfyProgressText, previewUrl: (p: ComfyPreview) => string | null): void {
    const now = this.o.now();
    if (m.type === "progress_text") {
      const id = this.comfyRunning;
      if (id && m.text) this.live(id, (j) => ({ ...j, message: m.text }));
      return;
    }
    if (m.type === "binary_preview") {
      // Without the metadata feature a preview names no prompt: it belongs to the one running (ComfyUI runs one).
      const id = m.prompt_id ?? this.comfyRunning;
      if (!id) return;
      const url = previewUrl(m);
      if (url) this.live(id, (j) => ({ ...j, previewUrl: url }));
      return;
    }
    const running = "prompt_id" in m.data && typeof m.data.prompt_id === "string" ? m.data.prompt_id : null;
    if (m.type === "execution_start" || m.type === "executing" || m.type === "progress") {
      if (running) this.comfyRunning = running;
    } else if (
      (m.type === "execution_success" || m.type === "execution_error" || m.type === "execution_interrupted") &&
      this.comfyRunning === running
    ) {
      this.comfyRunning = null;
    }
    switch (m.type) {
      case "status":
        return;
      case "execution_start":
        return this.live(m.data.prompt_id, (j) => ({
          ...j,
          service: j.service ?? "comfyui",
          status: "running",
          startedAt: j.startedAt ?? now,
          message: "Generation in progress",
        }));
      case "execution_cached":
        return;
      case "executing": {
        const id = m.data.prompt_id;
        if (!id) return;
        const node = m.data.node ?? null;
        this.stepClock.delete(id);
        return this.live(id, (j) => ({
          ...j,
          status: "running",
          startedAt: j.startedAt ?? now,
          currentNode: node,
          nodePercentage: 0,
          eta: null,
          message: node ? `Running node ${node}` : j.message,
        }));
      }
      case "progress": {
        const id = m.data.prompt_id;
        if (!id) return;
        const { value, max } = m.data;
        const node = m.data.node ?? null;
        const pct = max > 0 ? Math.min(100, (value / max) * 100) : 0;
        let clock = this.stepClock.get(id);
        if (!clock || clock.node !== node || value < clock.value) {
          clock = { node, at: now, value };
          this.stepClock.set(id, clock);
        }
        const steps = value - clock.value;
        const eta = steps > 0 ? (((now - clock.at) / steps) * (max - value)) / 1000 : null;
        return this.live(id, (j) => ({
          ...j,
          status: "running",
          startedAt: j.startedAt ?? now,
          currentNode: node ?? j.currentNode,
          currentStep: value,
          totalSteps: max,
          nodePercentage: pct,
          percentage: Math.max(j.percentage, Math.min(pct, 99)),
          eta,
          history: this.sample(j, value, max, pct, node),
        }));
      }
      case "progress_state":
        return;
      case "executed":
        return;
      case "execution_success":
        this.stepClock.delete(m.data.prompt_id);
        return this.edit(m.data.prompt_id, (j) =>
          TERMINAL.has(j.status)
            ? null
            : {
                ...j,
                status: "completed",
                percentage: 100,
                nodePercentage: 100,
                eta: null,
                currentNode: null,
                finishedAt: now,
                message: "Completed",
              },
        );
      case "execution_error":
        this.stepClock.delete(m.data.prompt_id);
        return this.edit(m.data.prompt_id, (j) =>
          TERMINAL.has(j.status)
            ? null
            : {
                ...j,
                status: "failed",
                eta: null,
                currentNode: null,
                finishedAt: now,
                error: {
                  code: "execution_failed",
                  message: m.data.exception_message ?? "the workflow failed",
                  node_id: m.data.node_id ?? null,
                  node_type: m.data.node_type ?? null,
                  exception_type: m.data.exception_type ?? null,
                  traceback: m.data.traceback ?? [],
                },
                message: m.data.exception_message ?? "Failed",
              },
        );
      case "execution_interrupted":
        this.stepClock.delete(m.data.prompt_id);
        return this.edit(m.data.prompt_id, (j) =>
          TERMINAL.has(j.status)
            ? null
            : { ...j, status: "cancelled", eta: null, currentNode: null, finishedAt: now, message: "Cancelled" },
        );
    }
  }

  // ---- persistence ---------------------------------------------------------------------------------------------

  /** The newest `limit` jobs, with a short history each, for localStorage. */
  exportJobs(limit: number, historyPerJob: number): JobProgress[] {
    return this.list()
      .slice(0, limit)
      .map((j) => ({ ...j, history: j.history.slice(-historyPerJob) }));
  }

  importJobs(jobs: ReadonlyArray<JobProgress>): void {
    for (const j of jobs) {
      if (typeof j?.jobId !== "string" || this.jobs.has(j.jobId)) continue;
      this.jobs.set(j.jobId, { ...emptyJob(j.jobId, this.o.now()), ...j });
      this.dirty.add(j.jobId);
    }
    this.listCache = null;
    this.indexCache = null;
    this.listDirty = true;
    this.indexDirty = true;
  }
}

/** The brief's progress shape of a job record (one object per record, so it can be a React snapshot). */
const progressCache = new WeakMap<JobProgress, IProgressState>();
export const IDLE_PROGRESS: IProgressState = Object.freeze({
  currentStep: 0,
  totalSteps: 0,
  percentage: 0,
  currentNode: null,
  eta: null,
});

export function progressOf(job: JobProgress | undefined): IProgressState {
  if (!job) return IDLE_PROGRESS;
  let p = progressCache.get(job);
  if (!p) {
    p = {
      currentStep: job.currentStep,
      totalSteps: job.totalSteps,
      percentage: job.percentage,
      currentNode: job.currentNode,
      eta: job.eta,
    };
    progressCache.set(job, p);
  }
  return p;
}

/** The studio at a glance: services, a submit form, filters and every job with live progress. */
import { useEffect, useMemo, useState } from "react";
import { useJobIndex, useStudioClient } from "../react/hooks";
import { submit } from "./actions";
import { serverLabel } from "./format";
import { JobRow } from "./JobRow";

interface Service {
  name: string;
  kind: string;
  state: string;
  reason: string | null;
  queue_remaining: number | null;
  uptime_percent?: number;
  http_latency?: { p50_ms: number | null };
  latency?: { p50_ms: number | null };
}

/** One server of a pool as `/api/services` reports it. */
interface PoolServer {
  url: string;
  state: string;
  usable: boolean;
  reason: string | null;
  queue_remaining: number | null;
  in_flight: number;
  completed?: number;
}

/** A pool of servers behind one service name (`serve --pool NAME=URL1,URL2`). */
interface Pool {
  name: string;
  state: string;
  capacity: number;
  waiting: string[];
  servers: PoolServer[];
  problems?: string[];
}

interface ServicesState {
  services: Service[];
  pools: Pool[];
  error: string | null;
}

const TEMPLATES = ["acceptance_progress", "invert", "sd_basic", "sd15_txt2img", "upscale_4x", "ltx_video"];
const FILTERS = ["all", "active", "queued", "running", "completed", "failed", "cancelled"] as const;

function useServices(): ServicesState {
  const client = useStudioClient();
  const [state, setState] = useState<ServicesState>({ services: [], pools: [], error: null });
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | null = null;
    const load = async () => {
      try {
        const r = await client.request("/api/services");
        if (r.status === 401) {
          // A wrong or missing token: asking again cannot help. The connection bar asks for the token; a new one
          // makes a new client, and this effect starts over with it.
          if (!stopped)
            setState({ services: [], pools: [], error: "services: the studio server needs the right token (401)" });
          return;
        }
        const body = r.ok ? ((await r.json()) as { services?: Service[]; pools?: Pool[] }) : null;
        if (!stopped) {
          setState(
            body
              ? { services: body.services ?? [], pools: body.pools ?? [], error: null }
              : { services: [], pools: [], error: `services: the studio server answered ${r.status}` },
          );
        }
      } catch {
        if (!stopped) setState((s) => ({ ...s, error: "services: the studio server does not answer" }));
      }
      if (!stopped) timer = setTimeout(load, 5000);
    };
    load();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [client]);
  return state;
}

/** A pool: its state, jobs waiting for a server, and a line per server (state, its queue, our jobs on it). */
function PoolCard({ pool }: { pool: Pool }) {
  return (
    <div className={`card pool pool-${pool.state.replace(/\s+/g, "_")}`} data-pool={pool.name}>
      <div className="svc-name">
        <span className="dot" /> {pool.name} <span className="sub">pool</span>
      </div>
      <div className="sub">
        {pool.state} · {pool.waiting.length} waiting for a server · up to {pool.capacity} per server
      </div>
      <ul className="pool-servers">
        {pool.servers.map((s) => (
          <li key={s.url} className={`svc-${s.state}`} data-pool-server={s.url}>
            <span className="dot" /> {serverLabel(s.url)}{" "}
            <span className="sub">
              {s.state}
              {s.usable ? "" : " (not usable)"}
              {s.reason ? ` — ${s.reason}` : ""} · queue {s.queue_remaining ?? "—"} · ours {s.in_flight}
              {s.completed !== undefined ? ` · done ${s.completed}` : ""}
            </span>
          </li>
        ))}
      </ul>
      {(pool.problems ?? []).map((p) => (
        <div key={p} className="err">
          {p}
        </div>
      ))}
    </div>
  );
}

function Services({ services, pools, error }: ServicesState) {
  return (
    <section className="services">
      <h2>Services</h2>
      {error && <div className="err">{error}</div>}
      <div className="cards">
        {services.map((s) => {
          const latency = s.latency?.p50_ms ?? s.http_latency?.p50_ms ?? null;
          return (
            <div key={s.name} className={`card svc-${s.state}`} data-service={s.name}>
              <div className="svc-name">
                <span className="dot" /> {s.name} <span className="sub">{s.kind}</span>
              </div>
              <div className="sub">
                {s.state}
                {s.reason ? ` — ${s.reason}` : ""}
              </div>
              <div className="sub">
                latency {latency !== null ? `${latency.toFixed(1)} ms` : "—"} · queue {s.queue_remaining ?? 0}
                {s.uptime_percent !== undefined ? ` · up ${s.uptime_percent.toFixed(0)} %` : ""}
              </div>
            </div>
          );
        })}
        {pools.map((p) => (
          <PoolCard key={p.name} pool={p} />
        ))}
      </div>
    </section>
  );
}

function SubmitForm() {
  const client = useStudioClient();
  const [workflow, setWorkflow] = useState(TEMPLATES[0] as string);
  const [tag, setTag] = useState("");
  const [note, setNote] = useState<string | null>(null);
  return (
    <form
      className="submit"
      onSubmit={async (e) => {
        e.preventDefault();
        const r = await submit(client, { workflow, ...(tag.trim() ? { tag: tag.trim() } : {}) });
        setNote(r.error ?? null);
      }}
    >
      <select value={workflow} onChange={(e) => setWorkflow(e.target.value)} aria-label="workflow">
        {TEMPLATES.map((t) => (
          <option key={t}>{t}</option>
        ))}
      </select>
      <input value={tag} onChange={(e) => setTag(e.target.value)} placeholder="tag (shot)" aria-label="tag" />
      <button type="submit">Run</button>
      {note && <span className="err">{note}</span>}
    </form>
  );
}

export function Overview() {
  const index = useJobIndex();
  const services = useServices();
  const poolNames = useMemo(() => new Set(services.pools.map((p) => p.name)), [services.pools]);
  const [filter, setFilter] = useState<(typeof FILTERS)[number]>("all");
  const [tag, setTag] = useState("");
  const tags = useMemo(() => [...new Set(index.map((j) => j.tag).filter((t): t is string => !!t))].sort(), [index]);
  const shown = index.filter(
    (j) =>
      (filter === "all" ||
        (filter === "active" ? j.status === "queued" || j.status === "running" : j.status === filter)) &&
      (!tag || j.tag === tag),
  );
  const counts = useMemo(() => {
    const c: Record<string, number> = {};
    for (const j of index) c[j.status] = (c[j.status] ?? 0) + 1;
    return c;
  }, [index]);
  return (
    <>
      <Services {...services} />
      <section>
        <div className="toolbar">
          <h2>Jobs</h2>
          <fieldset className="filters" aria-label="filter by state">
            {FILTERS.map((f) => (
              <button key={f} type="button" className={f === filter ? "on" : ""} onClick={() => setFilter(f)}>
                {f}
                {f !== "all" && f !== "active" && counts[f] ? ` ${counts[f]}` : ""}
              </button>
            ))}
          </fieldset>
          <select value={tag} onChange={(e) => setTag(e.target.value)} aria-label="filter by tag">
            <option value="">every tag</option>
            {tags.map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
          <SubmitForm />
        </div>
        <table className="jobs">
          <thead>
            <tr>
              <th>Job</th>
              <th>State</th>
              <th>Progress</th>
              <th>Preview</th>
              <th>Output</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {shown.map((j) => (
              <JobRow key={j.jobId} jobId={j.jobId} pool={j.service !== null && poolNames.has(j.service)} />
            ))}
          </tbody>
        </table>
        {shown.length === 0 && (
          <p className="empty">No jobs{filter !== "all" || tag ? " match the filter" : " yet"}.</p>
        )}
      </section>
    </>
  );
}

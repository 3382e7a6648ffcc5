/** One job: progress with its history, the newest preview, outputs, the error with what to do, timings. */
import { useState } from "react";
import { TERMINAL } from "../client/jobs";
import { useJob, useStudioClient } from "../react/hooks";
import { cancel, submissionOf, submit } from "./actions";
import { advice, clock, duration, serverLabel } from "./format";

function Sparkline({ values }: { values: number[] }) {
  if (values.length < 2) return null;
  const w = 300;
  const h = 40;
  const pts = values.map((v, i) => `${(i / (values.length - 1)) * w},${h - (v / 100) * h}`).join(" ");
  return (
    <svg className="spark" viewBox={`0 0 ${w} ${h}`} width={w} height={h} aria-label="progress history">
      <polyline points={pts} fill="none" stroke="currentColor" strokeWidth="1.5" />
    </svg>
  );
}

export function JobPage({ jobId }: { jobId: string }) {
  const job = useJob(jobId);
  const client = useStudioClient();
  const [note, setNote] = useState<string | null>(null);
  if (!job) {
    return (
      <section className="job-page">
        <a href="#/">← all jobs</a>
        <h2>Job {jobId}</h2>
        <p className="empty" data-status="unknown">
          This job is not known yet; its progress appears here as soon as the studio server reports it.
        </p>
      </section>
    );
  }
  const done = TERMINAL.has(job.status);
  const ran = job.startedAt && (job.finishedAt ?? Date.now()) - job.startedAt;
  return (
    <section className="job-page" data-job={jobId} data-status={job.status}>
      <a href="#/">← all jobs</a>
      <h2>
        {job.tag ?? "Job"} <span className="sub">{jobId}</span>
      </h2>
      <div className="job-head">
        <span className={`pill pill-${job.status}`}>{job.status}</span>
        <span>{job.message}</span>
      </div>
      <div className="bar big" role="progressbar" aria-valuenow={Math.round(job.percentage)}>
        <div className="fill" style={{ width: `${job.percentage}%` }} />
      </div>
      <p className="sub">
        {Math.round(job.percentage)} %{job.currentNode ? ` · node ${job.currentNodeType ?? ""} ${job.currentNode}` : ""}
        {job.totalSteps ? ` · step ${job.currentStep}/${job.totalSteps}` : ""}
        {job.eta !== null ? ` · ETA ${duration(job.eta)}` : ""}
      </p>
      <Sparkline values={job.history.map((s) => s.percentage)} />
      <div className="job-body">
        <div>
          <h3>Preview</h3>
          {job.previewUrl ? (
            <img className="preview" src={job.previewUrl} alt="newest preview" />
          ) : (
            <p className="sub">none yet</p>
          )}
        </div>
        <div>
          <h3>Outputs</h3>
          {job.outputs.length === 0 && <p className="sub">none yet</p>}
          <ul>
            {job.outputs.map((o) => (
              <li key={o.name}>
                {o.url ? (
                  <a className="output" href={o.url} target="_blank" rel="noreferrer">
                    {o.name}
                  </a>
                ) : (
                  o.name
                )}
              </li>
            ))}
          </ul>
          <h3>Timings</h3>
          <dl className="timings">
            <dt>submitted</dt>
            <dd>{clock(job.createdAt)}</dd>
            <dt>started</dt>
            <dd>{clock(job.startedAt)}</dd>
            <dt>finished</dt>
            <dd>{clock(job.finishedAt)}</dd>
            <dt>ran for</dt>
            <dd>{ran ? duration(ran / 1000) : "—"}</dd>
            <dt>service</dt>
            <dd>{job.service ?? "—"}</dd>
            {job.server && (
              <>
                <dt>server</dt>
                <dd data-server={job.server}>{serverLabel(job.server)}</dd>
              </>
            )}
          </dl>
        </div>
      </div>
      {job.error && (
        <div className="error-box">
          <h3>
            Failed: {job.error.code}
            {job.error.node_type ? ` in ${job.error.node_type}` : ""}
            {job.error.node_id ? ` (node ${job.error.node_id})` : ""}
          </h3>
          <p>{job.error.message}</p>
          <p>
            <b>What to do:</b> {advice(job.error)}
          </p>
          {job.error.traceback && job.error.traceback.length > 0 && <pre>{job.error.traceback.join("")}</pre>}
        </div>
      )}
      <div className="actions">
        {!done && (
          <button type="button" onClick={async () => setNote(await cancel(client, jobId))}>
            Cancel
          </button>
        )}
        {done && (
          <button
            type="button"
            disabled={!submissionOf(jobId)}
            title={
              submissionOf(jobId)
                ? "Submit the same workflow again"
                : "Submitted elsewhere: this page does not know its workflow"
            }
            onClick={async () => {
              const s = submissionOf(jobId);
              if (!s) return;
              const r = await submit(client, s);
              if (r.jobId) location.hash = `#/job/${encodeURIComponent(r.jobId)}`;
              setNote(r.error ?? null);
            }}
          >
            Re-run
          </button>
        )}
        {note && <span className="err">{note}</span>}
      </div>
    </section>
  );
}

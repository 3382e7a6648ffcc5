/** One job in the overview; re-renders only when that job changed (at most once per frame). */
import { memo, useState } from "react";
import { TERMINAL } from "../client/jobs";
import { useJob, useStudioClient } from "../react/hooks";
import { cancel, submissionOf, submit } from "./actions";
import { duration, serverLabel } from "./format";

/** A thumbnail that hides itself when its image is gone (a preview the server no longer holds). */
function Thumb({ src }: { src: string }) {
  const [failed, setFailed] = useState<string | null>(null);
  if (failed === src) return null;
  return <img src={src} alt="newest preview" loading="lazy" onError={() => setFailed(src)} />;
}

/** `pool`: the job's service is a pool of servers (the row then says which server has the job, or that it waits). */
export const JobRow = memo(function JobRow({ jobId, pool = false }: { jobId: string; pool?: boolean }) {
  const job = useJob(jobId);
  const client = useStudioClient();
  const [note, setNote] = useState<string | null>(null);
  if (!job) return null;
  const done = TERMINAL.has(job.status);
  const canRerun = submissionOf(jobId) !== null;
  return (
    <tr className={`job job-${job.status}`} data-job={jobId} data-status={job.status}>
      <td>
        <a href={`#/job/${encodeURIComponent(jobId)}`} title={jobId}>
          {job.tag ?? jobId.slice(0, 8)}
        </a>
        <div className="sub">{job.service ?? ""}</div>
        {job.server ? (
          <div className="sub server" data-server={job.server}>
            on {serverLabel(job.server)}
          </div>
        ) : (
          pool &&
          !done && (
            <div className="sub server waiting" data-server="">
              waiting for a server
            </div>
          )
        )}
      </td>
      <td>
        <span className={`pill pill-${job.status}`}>{job.status}</span>
      </td>
      <td className="progress-cell">
        <div
          className="bar"
          role="progressbar"
          aria-valuenow={Math.round(job.percentage)}
          aria-valuemin={0}
          aria-valuemax={100}
        >
          <div className="fill" style={{ width: `${job.percentage}%` }} />
        </div>
        <div className="sub">
          {Math.round(job.percentage)} %{job.currentNode ? ` · node ${job.currentNodeType ?? job.currentNode}` : ""}
          {job.totalSteps ? ` · step ${job.currentStep}/${job.totalSteps}` : ""}
          {job.eta !== null ? ` · ETA ${duration(job.eta)}` : ""}
        </div>
        {job.status === "failed" && <div className="err">{job.error?.message ?? job.message}</div>}
      </td>
      <td className="thumb">{job.previewUrl && <Thumb src={job.previewUrl} />}</td>
      <td>
        {job.outputs.map((o) =>
          o.url ? (
            <a key={o.name} className="output" href={o.url} target="_blank" rel="noreferrer">
              {o.name}
            </a>
          ) : (
            <span key={o.name}>{o.name}</span>
          ),
        )}
      </td>
      <td className="actions">
        {!done && (
          <button type="button" onClick={async () => setNote(await cancel(client, jobId))}>
            Cancel
          </button>
        )}
        {done && (
          <button
            type="button"
            disabled={!canRerun}
            title={
              canRerun ? "Submit the same workflow again" : "Submitted elsewhere: this page does not know its workflow"
            }
            onClick={async () => {
              const s = submissionOf(jobId);
              if (!s) return;
              const r = await submit(client, s);
              setNote(r.error ?? null);
            }}
          >
            Re-run
          </button>
        )}
        {note && <div className="err">{note}</div>}
      </td>
    </tr>
  );
});

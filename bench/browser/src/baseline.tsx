/**
 * The benchmark's baseline: the same page as a user would write it with react-use-websocket, the `lastMessage`
 * pattern of its README (an effect on `lastMessage` folds each message into the page's state), rows memoized.
 */
import { memo, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import useWebSocket from "react-use-websocket";
import { counters, RowView, streamUrl } from "./shared";

interface Job {
  status: string;
  percentage: number;
}

type Jobs = Record<string, Job>;

function fold(prev: Job | undefined, m: { type: string; percentage?: number }): Job {
  const j = prev ?? { status: "queued", percentage: 0 };
  switch (m.type) {
    case "job_queued":
      return j;
    case "job_started":
      return { ...j, status: "running" };
    case "progress":
      return { status: "running", percentage: typeof m.percentage === "number" ? m.percentage : j.percentage };
    case "job_completed":
      return { status: "completed", percentage: 100 };
    case "job_failed":
      return { ...j, status: "failed" };
    case "job_cancelled":
      return { ...j, status: "cancelled" };
    default:
      return j;
  }
}

const Row = memo(function Row({ id, job }: { id: string; job: Job }) {
  counters.rowRenders += 1;
  return <RowView id={id} status={job.status} percentage={job.percentage} />;
});

function Table() {
  const { lastMessage } = useWebSocket(streamUrl, { shouldReconnect: () => true });
  const [jobs, setJobs] = useState<Jobs>({});
  useEffect(() => {
    if (!lastMessage || typeof lastMessage.data !== "string") return;
    counters.handled += 1;
    let m: { type?: unknown; job_id?: unknown; percentage?: number };
    try {
      m = JSON.parse(lastMessage.data);
    } catch {
      return;
    }
    const id = m.job_id;
    const type = m.type;
    if (typeof id !== "string" || typeof type !== "string") return;
    setJobs((prev) => ({ ...prev, [id]: fold(prev[id], { type, percentage: m.percentage }) }));
  }, [lastMessage]);
  counters.tableRenders += 1;
  return (
    <table>
      <tbody>
        {Object.entries(jobs).map(([id, job]) => (
          <Row key={id} id={id} job={job} />
        ))}
      </tbody>
    </table>
  );
}

const root = document.getElementById("root");
if (root) createRoot(root).render(<Table />);

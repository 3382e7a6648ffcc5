/** The benchmark page built on our hooks, as the monitor uses them: a job index, one subscription per row. */
import { memo } from "react";
import { createRoot } from "react-dom/client";
import { useJob, useJobIndex, useProgressTracking, useWebSocketEvent, WebSocketProvider } from "../../../web/src/index";
import { counters, RowView, streamUrl } from "./shared";

const Row = memo(function Row({ id }: { id: string }) {
  const job = useJob(id);
  const progress = useProgressTracking(id);
  counters.rowRenders += 1;
  return <RowView id={id} status={job?.status ?? "queued"} percentage={progress.percentage} />;
});

function Table() {
  const index = useJobIndex();
  // Counts what the client hands the page (every valid message), without a render.
  useWebSocketEvent("*", () => {
    counters.handled += 1;
  });
  counters.tableRenders += 1;
  return (
    <table>
      <tbody>
        {index.map((j) => (
          <Row key={j.jobId} id={j.jobId} />
        ))}
      </tbody>
    </table>
  );
}

// `?progressInterval=0`: progress on every animation frame (the reference row; the default is the client's).
const every = new URLSearchParams(location.search).get("progressInterval");
const progressInterval = every === null ? undefined : Number(every);

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <WebSocketProvider url={streamUrl} progressInterval={progressInterval}>
      <Table />
    </WebSocketProvider>,
  );
}

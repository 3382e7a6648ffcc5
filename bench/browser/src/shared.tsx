/**
 * What both benchmark pages share: the same row markup, the same counters. Only how the rows get their data
 * differs (ours: the monitor's hooks; the baseline: react-use-websocket's `lastMessage`).
 */

/** Counters the driver reads (`window.__bench`): component renders by kind. Commits come from the devtools hook. */
export interface BenchCounters {
  tableRenders: number;
  rowRenders: number;
  /** Messages the page's logic was handed (ours: every stream message; the baseline: each `lastMessage` seen). */
  handled: number;
}

declare global {
  interface Window {
    __bench: BenchCounters;
  }
}

window.__bench = { tableRenders: 0, rowRenders: 0, handled: 0 };
export const counters = window.__bench;

/** The studio server that served the page: its event stream (every job). */
export const streamUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/events`;

export function RowView({ id, status, percentage }: { id: string; status: string; percentage: number }) {
  return (
    <tr data-job={id} data-status={status}>
      <td>{id}</td>
      <td>{status}</td>
      <td>
        <div className="bar">
          <div className="fill" style={{ width: `${percentage}%` }} />
        </div>
        {Math.round(percentage)} %
      </td>
    </tr>
  );
}

/** Small formatting helpers for the monitor. */
import type { JobError } from "../client/schemas";

export function duration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds)) return "—";
  // Up, not to nearest: "0 s" left while work remains reads as done.
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A pool server's URL as the page shows it: `host:port` (the scheme and a trailing slash add nothing). */
export function serverLabel(url: string): string {
  return url.replace(/^[a-z]+:\/\//i, "").replace(/\/+$/, "");
}

export function clock(ms: number | null | undefined): string {
  if (ms == null) return "—";
  return new Date(ms).toLocaleTimeString();
}

/** What to do about a failure, by its code. */
export function advice(error: JobError): string {
  switch (error.code) {
    case "validation_failed":
    case "invalid_workflow":
    case "invalid_parameter":
      return "Fix the workflow's inputs (the node named above) and run it again.";
    case "connect_failed":
    case "service_unavailable":
    case "closed":
      return "The service could not be reached: check that it is running, then re-run.";
    case "out_of_memory":
      return "The server ran out of memory: lower the resolution or batch size, or free the GPU, then re-run.";
    case "timeout":
      return "The job took too long: check the service's load, then re-run.";
    default:
      return error.node_type
        ? `The node ${error.node_type} failed on the server: see its message and traceback, fix its inputs, re-run.`
        : "See the message; re-run when the cause is fixed.";
  }
}

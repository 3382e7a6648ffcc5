/** The connection's state in words: what is happening, why, and when the next try is. */
import { useEffect, useState } from "react";
import { useStudioClient, useWebSocketConnection } from "../react/hooks";

function useSecondsUntil(at: number | null): number | null {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (at === null) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [at]);
  return at === null ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

export function ConnectionBar({ onToken }: { onToken: (t: string | null) => void }) {
  const q = useWebSocketConnection();
  const client = useStudioClient();
  const wait = useSecondsUntil(q.nextRetryAt);
  const [draft, setDraft] = useState("");
  let text: string;
  switch (q.phase) {
    case "connected":
      text = "Live";
      break;
    case "idle":
    case "connecting":
      text = "Connecting…";
      break;
    case "reconnecting":
      text = wait ? `Reconnecting in ${wait} s` : "Reconnecting…";
      break;
    case "circuit_open":
      text = `Circuit open (${q.breakerReason ?? "too many reconnects"}); next try in ${wait ?? "?"} s`;
      break;
    case "polling":
      text = `Polling every 2 s — the live link is down${q.breakerReason ? ` (${q.breakerReason})` : ""}; next try in ${wait ?? "?"} s`;
      break;
    case "auth_failed":
      text = q.error ?? "The studio server refused the token";
      break;
    case "gave_up":
      text = q.error ?? "Gave up reconnecting";
      break;
    default:
      text = "Disconnected";
  }
  return (
    <div className={`conn conn-${q.phase}`} data-phase={q.phase} role="status">
      <span className="dot" />
      <span className="conn-text">{text}</span>
      {q.phase === "connected" && (
        <span className="quality">
          {q.latencyMs !== null ? `${Math.round(q.latencyMs)} ms` : "— ms"} · {(q.dropRate * 100).toFixed(1)} % dropped
          · {q.reconnectCount} reconnects
        </span>
      )}
      {(q.phase === "reconnecting" || q.phase === "circuit_open" || q.phase === "polling" || q.phase === "gave_up") && (
        <button type="button" onClick={() => client.retryNow()}>
          Retry now
        </button>
      )}
      {q.phase === "auth_failed" && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            onToken(draft.trim() || null);
          }}
        >
          <input
            type="password"
            placeholder="studio token"
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            aria-label="studio token"
          />
          <button type="submit">Connect</button>
        </form>
      )}
    </div>
  );
}

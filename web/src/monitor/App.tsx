/** The studio monitor: every job, service and the connection at a glance; a page per job. */
import { useEffect, useMemo, useState } from "react";
import type { StudioClient } from "../client/client";
import { useStudioClient, WebSocketProvider } from "../react/hooks";
import { ConnectionBar } from "./ConnectionBar";
import { JobPage } from "./JobPage";
import { Overview } from "./Overview";

const TOKEN_KEY = "director-link:token";

function initialToken(): string | null {
  const q = new URLSearchParams(location.search).get("token");
  if (q) {
    localStorage.setItem(TOKEN_KEY, q);
    return q;
  }
  return localStorage.getItem(TOKEN_KEY);
}

/** The studio server this page talks to: the one that served it, or `?server=host:port` (development). */
function serverUrl(): string {
  const server = new URLSearchParams(location.search).get("server");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${server ?? location.host}/ws/events`;
}

function useHashRoute(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

/** The page's client on `window.__directorLink`, for tools, the console and the browser tests. */
function Expose() {
  const client = useStudioClient();
  useEffect(() => {
    (window as { __directorLink?: StudioClient }).__directorLink = client;
  }, [client]);
  return null;
}

export function App() {
  const [token, setToken] = useState(initialToken);
  const url = useMemo(serverUrl, []);
  const hash = useHashRoute();
  const jobId = hash.startsWith("#/job/") ? decodeURIComponent(hash.slice(6)) : null;
  const onToken = (t: string | null) => {
    if (t) localStorage.setItem(TOKEN_KEY, t);
    else localStorage.removeItem(TOKEN_KEY);
    setToken(t);
  };
  return (
    <WebSocketProvider url={url} token={token}>
      <Expose />
      <header className="top">
        <a className="brand" href="#/">
          Director Link <span>studio monitor</span>
        </a>
        <ConnectionBar onToken={onToken} />
      </header>
      <main>{jobId ? <JobPage jobId={jobId} /> : <Overview />}</main>
    </WebSocketProvider>
  );
}

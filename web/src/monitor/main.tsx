import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { StudioClient } from "../client/client";
import { App } from "./App";
import "./monitor.css";

// The client class, for scripts on the page (and the browser tests, which load this bundle on ComfyUI's origin).
(window as { DirectorLink?: unknown }).DirectorLink = { StudioClient };

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}

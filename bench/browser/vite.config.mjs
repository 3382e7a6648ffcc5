// Builds the two benchmark pages with the web package's Vite. One React for both the pages and the web
// package's hooks: `dedupe` resolves react from this folder's node_modules for every importer.
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));

export default {
  root: here,
  base: "/bench/",
  logLevel: "warn",
  esbuild: { jsx: "automatic", legalComments: "none" },
  resolve: { dedupe: ["react", "react-dom"] },
  build: {
    emptyOutDir: true,
    target: "es2020",
    modulePreload: { polyfill: false },
    rollupOptions: {
      input: { ours: `${here}ours.html`, baseline: `${here}baseline.html`, floor: `${here}floor.html` },
    },
  },
};

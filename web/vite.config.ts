import { defineConfig } from "vite";

// Fixed file names: the studio server embeds exactly these files (src/studio/monitor.rs), so a rebuild that
// changes them is a visible diff (scripts/check-dist.mjs).
export default defineConfig({
  esbuild: { jsx: "automatic", legalComments: "none" },
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2020",
    modulePreload: { polyfill: false },
    rollupOptions: {
      output: {
        entryFileNames: "assets/monitor.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/monitor[extname]",
      },
    },
  },
});

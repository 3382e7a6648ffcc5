// Rebuilds the monitor from source into a temporary folder and fails when it differs from the committed
// web/dist (which the studio server embeds): the page users get is the page the source says.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const web = fileURLToPath(new URL("..", import.meta.url));
const committed = join(web, "dist");
const fresh = mkdtempSync(join(tmpdir(), "monitor-dist-"));

function files(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else out.push(p);
  }
  return out;
}

try {
  execFileSync(
    join(web, "node_modules", ".bin", "vite"),
    ["build", "--outDir", fresh, "--emptyOutDir", "--logLevel", "warn"],
    {
      cwd: web,
      stdio: "inherit",
    },
  );
  const a = files(committed)
    .map((p) => relative(committed, p))
    .sort();
  const b = files(fresh)
    .map((p) => relative(fresh, p))
    .sort();
  const problems = [];
  for (const f of new Set([...a, ...b])) {
    if (!a.includes(f)) problems.push(`${f}: built from source but not committed`);
    else if (!b.includes(f)) problems.push(`${f}: committed but no longer built`);
    else if (!readFileSync(join(committed, f)).equals(readFileSync(join(fresh, f)))) {
      problems.push(`${f}: differs from a fresh build`);
    }
  }
  if (problems.length) {
    console.error(`web/dist is stale (run \`npm run build\` in web/ and commit):\n  ${problems.join("\n  ")}`);
    process.exitCode = 1;
  } else {
    console.log(`web/dist matches a fresh build (${a.length} files)`);
  }
} finally {
  rmSync(fresh, { recursive: true, force: true });
}

// Bundles the dashboard with esbuild into the folder given as the first argument (default
// dist/): index.html, assets/app.js, assets/app.css (uPlot's styles and ours).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || join(here, "dist");
mkdirSync(join(out, "assets"), { recursive: true });
await build({
  entryPoints: [join(here, "src/app.js"), join(here, "src/app.css")],
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ["chrome110", "firefox110", "safari16"],
  outdir: join(out, "assets"),
  logLevel: "warning",
});
copyFileSync(join(here, "src/index.html"), join(out, "index.html"));
console.log(`dashboard built into ${out}`);

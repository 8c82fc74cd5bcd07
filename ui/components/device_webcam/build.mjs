// The one build: src/ bundled by esbuild into bundle/device_webcam.js, beside index.html and
// LiteRT.js's WebAssembly (the plain build for browsers with relaxed SIMD, the compat one for
// the rest), all committed so that the app needs no Node to run.
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { build } from "esbuild";

const OUT = "bundle";
const WASM = "node_modules/@litertjs/core/wasm";
const RUNTIME_FILES = [
  "litert_wasm_internal.js",
  "litert_wasm_internal.wasm",
  "litert_wasm_compat_internal.js",
  "litert_wasm_compat_internal.wasm",
];

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT);
await build({
  entryPoints: ["src/index.js"],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "eof",
  outfile: `${OUT}/device_webcam.js`,
  logLevel: "warning",
});
copyFileSync("index.html", `${OUT}/index.html`);
for (const file of RUNTIME_FILES) copyFileSync(`${WASM}/${file}`, `${OUT}/${file}`);

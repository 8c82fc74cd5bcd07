// LiteRT.js, and the model files the app serves: fetched with their progress, checked against
// the SHA-256 the server gives, and compiled once for the CPU (WebAssembly with XNNPACK).
import { loadAndCompile, loadLiteRt, Tensor } from "@litertjs/core";

export class ChecksumError extends Error {}

let runtime = null;

// LiteRT.js's WebAssembly from `folder` (the app's own, beside this bundle), once per page.
export function loadRuntime(folder) {
  if (!runtime) runtime = loadLiteRt(folder);
  return runtime;
}

export async function sha256Hex(bytes) {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new ChecksumError("this page is not a secure context (https or localhost), so no checksum can be taken");
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// The file's bytes, `progress(received, total)` called as they arrive.
export async function fetchBytes(url, progress = () => {}) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  const total = Number(response.headers.get("Content-Length")) || 0;
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    progress(received, total);
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

export const CACHE_NAME = "emotion-lens-models";

// A served model file {url, sha256}, checked and compiled: run(Float32Array, shape) -> [Float32Array].
// Checked files are kept in the browser's cache (each name carries its SHA-256, so a kept copy
// is never stale) and the next page takes them from there, checked again.
export async function loadModel(file, progress) {
  const url = new URL(file.url, document.baseURI).href;
  const storage = globalThis.caches ? await caches.open(CACHE_NAME).catch(() => null) : null;
  const kept = storage ? await storage.match(url).catch(() => null) : null;
  let bytes = kept ? new Uint8Array(await kept.arrayBuffer()) : null;
  if (!bytes || (await sha256Hex(bytes)) !== file.sha256) {
    bytes = await fetchBytes(url, progress);
    const sha256 = await sha256Hex(bytes);
    if (sha256 !== file.sha256) {
      throw new ChecksumError(`${file.url} has SHA-256 ${sha256.slice(0, 12)}..., not the ${file.sha256.slice(0, 12)}... the server announced`);
    }
    if (storage) await storage.put(url, new Response(bytes)).catch(() => {}); // a full cache: fetched next time
  }
  const compiled = await loadAndCompile(bytes, { accelerator: "wasm" });
  return {
    async run(data, shape) {
      const input = new Tensor(data, shape);
      try {
        const outputs = await compiled.run(input);
        const arrays = outputs.map((output) => Float32Array.from(output.toTypedArray()));
        outputs.forEach((output) => output.delete());
        return arrays;
      } finally {
        input.delete();
      }
    },
  };
}

// Parse Mermaid diagrams with the real Mermaid parser (used by tests/test_viz.py when
// OPENINTENT_MERMAID_MODULES names a node_modules directory holding `mermaid` and `jsdom`).
// Usage: node mermaid_check.mjs FILE   (diagrams separated by a line "=====")
// Prints one line per diagram: "OK <type>" or "ERR <message>".
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.env.OPENINTENT_MERMAID_MODULES;
const load = async (name) => {
  const manifest = JSON.parse(readFileSync(join(modules, name, "package.json"), "utf8"));
  const entry = manifest.exports?.["."]?.import?.default ?? manifest.exports?.["."]?.import
    ?? manifest.module ?? manifest.main;
  return import(pathToFileURL(join(modules, name, typeof entry === "string" ? entry : "index.js")));
};
const require = createRequire(join(modules, "x.js"));
const { JSDOM } = require("jsdom");
const dom = new JSDOM("<!DOCTYPE html><body></body>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.DOMParser = dom.window.DOMParser;
const { default: mermaid } = await load("mermaid");
mermaid.initialize({ startOnLoad: false });
for (const chunk of readFileSync(process.argv[2], "utf8").split("\n=====\n")) {
  try {
    const parsed = await mermaid.parse(chunk);
    console.log("OK", parsed.diagramType);
  } catch (error) {
    console.log("ERR", String(error.message || error).split("\n").join(" | "));
  }
}

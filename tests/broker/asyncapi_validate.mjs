// Parses an AsyncAPI document with the official parser (@asyncapi/parser, pinned in
// package-lock.json) and prints its diagnostics as JSON: [{severity, code, message, path}].
// Run by tests/broker/test_asyncapi_parser.py: node tests/broker/asyncapi_validate.mjs <file>
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const file = process.argv[2];
if (!file) {
  console.error("usage: node asyncapi_validate.mjs <asyncapi.json>");
  process.exit(2);
}
const severities = {
  [DiagnosticSeverity.Error]: "error",
  [DiagnosticSeverity.Warning]: "warning",
  [DiagnosticSeverity.Information]: "information",
  [DiagnosticSeverity.Hint]: "hint",
};
const { document, diagnostics } = await new Parser().parse(await readFile(file, "utf8"), { source: file });
const report = diagnostics.map((d) => ({
  severity: severities[d.severity] ?? String(d.severity),
  code: String(d.code),
  message: d.message,
  path: d.path.join("/"),
}));
console.log(JSON.stringify({ parsed: document !== undefined, diagnostics: report }, null, 2));

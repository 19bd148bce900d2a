// The first real compiler or bundler error of a `next build` log, as one line "file:line:col message":
//   node build-error.mjs build.log
// Prints it and exits 0; prints nothing and exits 1 when the log holds no error it recognises (test.sh
// then falls back to the first line mentioning an error).
//
// Why: the lines that match "error" first are banners ("> Build error occurred", "Failed to compile.",
// "Turbopack build failed with 1 error:"); the cause is the location line that follows and its message
// (Turbopack and webpack: "./src/app/x/route.ts:3:1" then "Module not found: …"; TypeScript, which
// Next runs after compiling: "src/lib/tags.ts(97,62): error TS2353: …").
import fs from "node:fs";

const MAX = 300;
const lines = fs.readFileSync(process.argv[2], "utf8").replace(/\x1b\[[0-9;]*m/g, "").split(/\r?\n/);

const FILE = String.raw`(?:\.{0,2}\/)?(?:[\w@.+-]+\/)*[\w@.+-]+\.(?:[cm]?[jt]sx?|css|scss|sass|json|mdx?)`;
const TSC = new RegExp(String.raw`^(${FILE})\((\d+),(\d+)\): error (TS\d+): (.*)$`);
const LOCATION = new RegExp(String.raw`^(${FILE}):(\d+)(?::(\d+))?$`);
const INLINE = new RegExp(String.raw`^(${FILE}):(\d+):(\d+):?\s+(?:[Ee]rror:\s*)?(\S.*)$`);
const FRAME = /^\s*(>\s*)?\d+\s*\||^\s*\|/; // a code frame line: "  2 | …", "> 3 | …", "    | ^^^"
const BANNER = /build error occurred|failed to compile|failed to type check|build failed with \d+ error|^npm (err|error)|build worker exited|^error: command failed|^\s*at /i;

const clip = (s) => (s.length > MAX ? s.slice(0, MAX - 1) + "…" : s);
const say = (s) => {
  process.stdout.write(clip(s.replace(/\s+/g, " ").trim()) + "\n");
  process.exit(0);
};

for (let i = 0; i < lines.length; i++) {
  const line = lines[i].trim();
  let m = line.match(TSC);
  if (m) say(`${m[1]}:${m[2]}:${m[3]} ${m[4]}: ${m[5]}`);
  m = line.match(INLINE);
  if (m) say(`${m[1]}:${m[2]}:${m[3]} ${m[4]}`);
  m = line.match(LOCATION);
  if (!m) continue;
  // The message: the next non-empty lines up to the code frame or a blank line.
  const msg = [];
  for (let j = i + 1; j < lines.length; j++) {
    const next = lines[j].trim();
    if (!next) { if (msg.length) break; continue; }
    if (FRAME.test(lines[j]) || LOCATION.test(next)) break;
    msg.push(next.replace(/^Error:\s*/, ""));
  }
  if (msg.length) say(`${line} ${msg.join(" ")}`);
}
// No located error: the first line that says error and is not a banner.
for (const raw of lines) {
  const line = raw.trim();
  if (/error/i.test(line) && !BANNER.test(line)) say(line.replace(/^Error:\s*/, ""));
}
process.exit(1);

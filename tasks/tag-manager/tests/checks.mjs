// The tag-manager checks that need Node: `node checks.mjs MODE WORKSPACE OUT.json [BASE_URL STATE_DIR]`.
//   source: tags_lib (exports of src/lib/tags.ts) and the file halves of api_route, admin_page, admin_nav;
//   api:    api_route against a running `next start` (mutates content/);
//   ui:     admin_nav, admin_page, client_mutations in headless Chromium (mutates content/).
// Each check is {ok, note}; OUT.json is rewritten after every check so a timeout keeps what finished.
// Expected tags and counts always come from the MDX files on disk, parsed with the workspace's
// gray-matter, never from hard-coded fixtures.
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const [, , MODE, WS, OUT, BASE, STATE] = process.argv;
const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD || "quillpost-admin";
const results = {};
const save = () => fs.writeFileSync(OUT, JSON.stringify(results, null, 1));
const log = (...a) => console.log(`[${MODE}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function record(name, ok, note = "") {
  // Playwright's messages carry ANSI colours and a call log: keep the first line's sense.
  const clean = String(note).replace(/\x1b\[[0-9;]*m/g, "").split(/\s*Call log:/)[0].replace(/\s+/g, " ").trim();
  results[name] = { ok: !!ok, note: ok ? "" : clean.slice(0, 500) };
  save();
  log(`${ok ? "PASS" : "FAIL"} ${name}${ok ? "" : ": " + note}`);
}

class CheckFail extends Error {}
const must = (cond, note) => {
  if (!cond) throw new CheckFail(note);
};

// ------------------------------------------------------------------------------------------------
// Disk state.
const wsRequire = createRequire(path.join(WS, "package.json"));
let matter = null;
function grayMatter() {
  if (!matter) matter = wsRequire("gray-matter");
  return matter;
}

/** The posts: content/posts/*.mdx (as src/lib/posts.ts of the base repo reads them). */
function listPostFiles(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".mdx"))
    .map((e) => path.join(dir, e.name))
    .sort();
}

function registryNames(json) {
  if (Array.isArray(json)) {
    return json
      .map((x) => (typeof x === "string" ? x : x && (x.name ?? x.tag ?? x.slug ?? x.id)))
      .filter((x) => typeof x === "string");
  }
  if (json && typeof json === "object") {
    if (json.tags && typeof json.tags === "object") return registryNames(json.tags);
    return Object.keys(json);
  }
  return [];
}

/** {posts: [{file, tags, data, body}], registry: [names], counts: Map(name → count), orphans: Set} */
function readDisk() {
  const gm = grayMatter();
  const posts = listPostFiles(path.join(WS, "content", "posts")).map((file) => {
    const raw = fs.readFileSync(file, "utf8");
    const parsed = gm(raw, { cache: false });
    const t = parsed.data.tags;
    const tags = Array.isArray(t) ? t.map(String) : typeof t === "string" ? [t] : [];
    return { file: path.relative(WS, file), tags, data: parsed.data, body: parsed.content.trim() };
  });
  let registry = [];
  const regFile = path.join(WS, "content", "tags.json");
  if (fs.existsSync(regFile)) registry = registryNames(JSON.parse(fs.readFileSync(regFile, "utf8")));
  const counts = new Map();
  for (const p of posts) for (const t of new Set(p.tags)) counts.set(t, (counts.get(t) || 0) + 1);
  const orphans = new Set();
  for (const r of registry) if (!counts.has(r)) { counts.set(r, 0); orphans.add(r); }
  return { posts, registry, counts, orphans };
}

const byFile = (disk) => new Map(disk.posts.map((p) => [p.file, p]));
const sortedJSON = (a) => JSON.stringify([...a].sort());
const canon = (v) =>
  v instanceof Date ? v.toISOString() : Array.isArray(v) ? v.map(canon)
  : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v;
const plainData = (d) => {
  const { tags, ...rest } = d;
  return JSON.stringify(canon(rest));
};

/** Every post after a mutation: tags equal `expect(oldTags)` (as a multiset, order free), and the
 * rest of the front matter and the body are unchanged. Returns a failure note or "". */
function compareDisk(before, after, expect, what) {
  const a = byFile(after);
  if (a.size !== before.posts.length) return `${what}: content/posts now has ${a.size} posts, had ${before.posts.length}`;
  for (const p of before.posts) {
    const q = a.get(p.file);
    if (!q) return `${what}: ${p.file} disappeared`;
    const want = expect(p.tags);
    if (sortedJSON(q.tags) !== sortedJSON(want))
      return `${what}: ${p.file} has tags ${JSON.stringify(q.tags)}, expected ${JSON.stringify(want)} (had ${JSON.stringify(p.tags)})`;
    if (plainData(q.data) !== plainData(p.data)) return `${what}: the other front matter of ${p.file} changed`;
    if (q.body !== p.body) return `${what}: the body of ${p.file} changed`;
  }
  return "";
}
const renamed = (from, to) => (tags) => tags.map((t) => (t === from ? to : t));
const merged = (from, to) => (tags) => {
  if (!tags.includes(from)) return tags;
  const out = [];
  for (const t of tags.map((t) => (t === from ? to : t))) if (t !== to || !out.includes(to)) out.push(t);
  return out;
};
const deleted = (name) => (tags) => tags.filter((t) => t !== name);

/** Tags used by posts, most used first, then by name (deterministic). */
function usedTags(disk) {
  return [...disk.counts.entries()].filter(([, c]) => c > 0).sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1)).map(([n]) => n);
}

// ------------------------------------------------------------------------------------------------
// source
function exportedNames(src) {
  const names = new Set();
  const re1 = /export\s+(?:default\s+)?(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)/g;
  const re2 = /export\s+(?:const|let|var)\s+([A-Za-z_$][\w$]*)/g;
  const re3 = /export\s*(?:type\s*)?\{([^}]*)\}/g;
  for (const m of src.matchAll(re1)) names.add(m[1]);
  for (const m of src.matchAll(re2)) names.add(m[1]);
  for (const m of src.matchAll(re3)) {
    if (/^\s*type\b/.test(m[0].slice(6))) continue;
    for (const part of m[1].split(",")) {
      const mm = part.trim().match(/^(?:type\s+)?[\w$]+(?:\s+as\s+([\w$]+))?$/);
      if (!mm || /^type\s/.test(part.trim())) continue;
      names.add(mm[1] || part.trim().split(/\s+/)[0]);
    }
  }
  return [...names];
}

function sourceChecks() {
  const rd = (p) => {
    const f = path.join(WS, p);
    return fs.existsSync(f) ? fs.readFileSync(f, "utf8") : null;
  };
  // tags_lib: four distinct exported functions, one per concept.
  (() => {
    const src = rd("src/lib/tags.ts");
    if (src === null) return record("tags_lib", false, "src/lib/tags.ts does not exist");
    const names = exportedNames(src);
    const concepts = [
      ["listing with counts", /count|usage|usedby|all|list|stat|summar|overview|index|withposts|tally|^(get|load|read|fetch|find|collect|compute)\w*tags?$/i],
      ["orphans", /orphan|unused/i],
      ["rename", /rename/i],
      ["merge", /merge/i],
    ];
    // A matching of concepts to distinct export names (tiny: brute force).
    const assign = (i, used) => {
      if (i === concepts.length) return [];
      for (const n of names) {
        if (used.has(n) || !concepts[i][1].test(n)) continue;
        const rest = assign(i + 1, new Set([...used, n]));
        if (rest) return [n, ...rest];
      }
      return null;
    };
    const got = assign(0, new Set());
    if (got) return record("tags_lib", true);
    const missing = concepts.filter(([, re]) => !names.some((n) => re.test(n))).map(([c]) => c);
    record("tags_lib", false, `src/lib/tags.ts exports [${names.join(", ")}]: no distinct exported function for ${missing.length ? missing.join(", ") : "each of listing with counts, orphans, rename, merge"}`);
  })();

  // api_route (file half): route.ts exports GET, PATCH and DELETE.
  (() => {
    const src = rd("src/app/api/admin/tags/route.ts");
    if (src === null) return record("api_route", false, "src/app/api/admin/tags/route.ts does not exist");
    const names = exportedNames(src);
    const missing = ["GET", "PATCH", "DELETE"].filter((m) => !names.includes(m));
    record("api_route", missing.length === 0, `route.ts does not export ${missing.join(", ")}`);
  })();

  // admin_page (file half).
  record("admin_page", rd("src/app/admin/tags/page.tsx") !== null, "src/app/admin/tags/page.tsx does not exist");

  // admin_nav (file half): the AdminNav component (or a local module it imports) mentions /admin/tags.
  (() => {
    const files = [];
    const walk = (d) => {
      if (!fs.existsSync(d)) return;
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (/\.(tsx?|jsx?|mjs)$/.test(e.name)) files.push(p);
      }
    };
    walk(path.join(WS, "src"));
    const defines = files.filter((f) => {
      const s = fs.readFileSync(f, "utf8");
      return /(function|const|let|class)\s+AdminNav\b/.test(s) || /^AdminNav\.(tsx?|jsx?)$/.test(path.basename(f));
    });
    if (!defines.length) return record("admin_nav", false, "no AdminNav component found under src/");
    const mentions = (f) => /\/admin\/tags\b/.test(fs.readFileSync(f, "utf8"));
    for (const f of defines) {
      if (mentions(f)) return record("admin_nav", true);
      // Links kept in a local module that the component imports.
      const s = fs.readFileSync(f, "utf8");
      for (const m of s.matchAll(/from\s+["'](\.{1,2}\/[^"']+|@\/[^"']+)["']/g)) {
        let base = m[1].startsWith("@/") ? path.join(WS, "src", m[1].slice(2)) : path.resolve(path.dirname(f), m[1]);
        for (const cand of [base, ...[".ts", ".tsx", ".js", ".jsx"].map((x) => base + x), ...["index.ts", "index.tsx"].map((x) => path.join(base, x))]) {
          if (fs.existsSync(cand) && fs.statSync(cand).isFile() && mentions(cand)) return record("admin_nav", true);
        }
      }
    }
    record("admin_nav", false, `AdminNav (${defines.map((f) => path.relative(WS, f)).join(", ")}) does not mention /admin/tags`);
  })();
}

// ------------------------------------------------------------------------------------------------
// HTTP helpers (api mode).
async function http(method, url, { body, cookie, raw } = {}) {
  const headers = {};
  if (cookie) headers.cookie = cookie;
  let payload;
  if (raw !== undefined) { payload = raw; headers["content-type"] = "application/json"; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers["content-type"] = "application/json"; }
  let res, text;
  try {
    res = await fetch(BASE + url, { method, headers, body: payload, redirect: "manual", signal: AbortSignal.timeout(30000) });
    text = await res.text();
  } catch (e) {
    throw new CheckFail(`${method} ${url}: ${e?.name === "TimeoutError" ? "no answer within 30 s" : e?.message || e}`);
  }
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, json, text, headers: res.headers };
}
const brief = (r) => `${r.status} ${(r.text || "").replace(/\s+/g, " ").slice(0, 160)}`;

async function login() {
  const r = await http("POST", "/api/auth/login", { body: { password: ADMIN_PASSWORD } });
  must(r.status >= 200 && r.status < 400, `login failed: POST /api/auth/login → ${brief(r)}`);
  const cookies = (r.headers.getSetCookie ? r.headers.getSetCookie() : [r.headers.get("set-cookie") || ""]).map((c) => c.split(";")[0]).filter(Boolean);
  must(cookies.length, "login returned no Set-Cookie");
  return cookies.join("; ");
}

function compareListing(data, disk) {
  must(Array.isArray(data), `GET data is not an array: ${JSON.stringify(data)?.slice(0, 160)}`);
  const seen = new Map();
  for (const it of data) {
    must(it && typeof it.name === "string" && typeof it.count === "number" && typeof it.orphan === "boolean",
      `GET item is not {name: string, count: number, orphan: boolean}: ${JSON.stringify(it)?.slice(0, 160)}`);
    must(!seen.has(it.name), `GET lists "${it.name}" twice`);
    seen.set(it.name, it);
  }
  for (const [name, count] of disk.counts) {
    const it = seen.get(name);
    must(it, `GET does not list "${name}"${disk.orphans.has(name) ? " (an orphan)" : ""}`);
    must(it.count === count, `GET gives "${name}" count ${it.count}, the posts on disk give ${count}`);
    must(it.orphan === disk.orphans.has(name), `GET gives "${name}" orphan: ${it.orphan} (count ${count})`);
  }
  for (const name of seen.keys()) must(disk.counts.has(name), `GET lists "${name}", which no post or registry entry has`);
}

async function apiChecks() {
  const step = { name: "" };
  try {
    const fresh = readDisk();
    const used = usedTags(fresh);
    must(used.length >= 4, `fixtures have only ${used.length} used tags`);
    // Merge A into B: prefer a pair that shares a post and where A also has posts without B.
    let pick = null;
    for (const a of used) for (const b of used) {
      if (a === b) continue;
      const both = fresh.posts.filter((p) => p.tags.includes(a) && p.tags.includes(b)).length;
      const aOnly = fresh.posts.filter((p) => p.tags.includes(a) && !p.tags.includes(b)).length;
      const score = (both > 0 ? 10 : 0) + (aOnly > 0 ? 5 : 0) - fresh.counts.get(a) / 100;
      if (!pick || score > pick.score) pick = { a, b, score };
    }
    const A = pick.a, B = pick.b;
    const rest = used.filter((t) => t !== A && t !== B);
    const R = rest[0], C = rest[1];
    const orphan = [...fresh.orphans].sort()[0];
    const NEW = "labctl-renamed-by-api";
    log(`rename ${R} → ${NEW}; merge ${A} → ${B}; delete ${C}${orphan ? ` and orphan ${orphan}` : ""}`);

    step.name = "unauthenticated";
    let r = await http("GET", "/api/admin/tags");
    must(r.status === 401, `unauthenticated GET → ${brief(r)} (expected 401)`);
    must(r.json && "error" in r.json, `unauthenticated GET body is not {"error": …}: ${brief(r)}`);
    r = await http("PATCH", "/api/admin/tags", { body: { action: "rename", from: R, to: NEW } });
    must(r.status === 401, `unauthenticated PATCH → ${brief(r)} (expected 401)`);
    r = await http("DELETE", `/api/admin/tags?name=${encodeURIComponent(C)}`);
    must(r.status === 401, `unauthenticated DELETE → ${brief(r)} (expected 401)`);
    must(!compareDisk(fresh, readDisk(), (t) => t, "x"), "an unauthenticated PATCH or DELETE changed the posts");

    step.name = "GET";
    const cookie = await login();
    r = await http("GET", "/api/admin/tags", { cookie });
    must(r.status === 200, `GET → ${brief(r)} (expected 200)`);
    must(r.json && typeof r.json === "object" && "data" in r.json, `GET body is not {"data": …}: ${brief(r)}`);
    compareListing(r.json.data, fresh);

    const mutate = async (what, method, url, body, expect) => {
      const before = readDisk();
      const res = await http(method, url, { cookie, body });
      must(res.status >= 200 && res.status < 300, `${what} → ${brief(res)} (expected 2xx)`);
      must(res.json && typeof res.json === "object" && "data" in res.json, `${what} body is not {"data": …}: ${brief(res)}`);
      const after = readDisk();
      const why = compareDisk(before, after, expect, what);
      must(!why, why);
      const g = await http("GET", "/api/admin/tags", { cookie });
      must(g.status === 200 && g.json, `GET after ${what} → ${brief(g)}`);
      try { compareListing(g.json.data, after); } catch (e) { throw new CheckFail(`after ${what}: ${e.message}`); }
      return after;
    };

    step.name = "rename";
    let d = await mutate(`PATCH rename ${R} → ${NEW}`, "PATCH", "/api/admin/tags", { action: "rename", from: R, to: NEW }, renamed(R, NEW));
    must(!d.counts.has(R), `after renaming, "${R}" still exists (registry not updated?)`);
    must(d.counts.get(NEW) === fresh.counts.get(R), `after renaming, "${NEW}" has count ${d.counts.get(NEW)}`);

    step.name = "merge";
    d = await mutate(`PATCH merge ${A} → ${B}`, "PATCH", "/api/admin/tags", { action: "merge", from: A, to: B }, merged(A, B));
    must(!d.counts.has(A), `after merging, "${A}" still exists (registry not updated?)`);
    for (const p of d.posts) must(p.tags.filter((t) => t === B).length <= 1, `after merging, ${p.file} has "${B}" more than once`);

    step.name = "delete";
    d = await mutate(`DELETE ?name=${C}`, "DELETE", `/api/admin/tags?name=${encodeURIComponent(C)}`, undefined, deleted(C));
    must(!d.counts.has(C), `after deleting, "${C}" still exists (registry not updated?)`);
    if (orphan) {
      d = await mutate(`DELETE ?name=${orphan} (an orphan)`, "DELETE", `/api/admin/tags?name=${encodeURIComponent(orphan)}`, undefined, (t) => t);
      must(!d.counts.has(orphan), `after deleting the orphan "${orphan}", it is still in the registry`);
    }

    step.name = "bad PATCH";
    const before = readDisk();
    const [x, y] = usedTags(before);
    for (const [label, opts] of [
      ["unknown action", { body: { action: "explode", from: x, to: y } }],
      ["missing \"to\"", { body: { action: "rename", from: x } }],
      ["a body that is not JSON", { raw: "this is not json" }],
    ]) {
      const res = await http("PATCH", "/api/admin/tags", { cookie, ...opts });
      must(res.status >= 400 && res.status < 500, `PATCH with ${label} → ${brief(res)} (expected 4xx)`);
      must(res.json && typeof res.json === "object" && "error" in res.json, `PATCH with ${label}: body is not {"error": …}: ${brief(res)}`);
    }
    must(!compareDisk(before, readDisk(), (t) => t, "x"), "a rejected PATCH changed the posts");
    record("api_route", true);
  } catch (e) {
    record("api_route", false, e instanceof CheckFail ? e.message : `${step.name}: ${e?.message || e}`);
  }
}

// ------------------------------------------------------------------------------------------------
// Browser (ui mode).
function loadPlaywright() {
  const cands = [process.env.PLAYWRIGHT_CORE, "playwright-core"];
  try {
    cands.push(path.join(execFileSync("npm", ["root", "-g"], { encoding: "utf8", timeout: 20000 }).trim(), "playwright-core"));
  } catch {}
  cands.push("/usr/local/lib/node_modules/playwright-core", "/usr/lib/node_modules/playwright-core");
  const req = createRequire(import.meta.url);
  for (const c of cands.filter(Boolean)) {
    try { return req(c); } catch {}
  }
  throw new Error("playwright-core not found");
}

/** Reads the tag table: the <table> whose cells hold the most tag names; its header cells and rows. */
async function readTable(page, names) {
  // null while the page is navigating (its execution context goes away) or has no table.
  const tables = await page.evaluate(() => {
    const clean = (cell) => {
      const c = cell.cloneNode(true);
      c.querySelectorAll("button, input, select, textarea, svg, [role=button], [aria-hidden=true]").forEach((e) => e.remove());
      return (c.textContent || "").replace(/\s+/g, " ").trim();
    };
    return [...document.querySelectorAll("table")].map((table, index) => {
      const trs = [...table.querySelectorAll("tr")].filter((tr) => tr.closest("table") === table);
      const headerRows = trs.filter((tr) => tr.parentElement?.tagName === "THEAD" || (![...tr.cells].some((c) => c.tagName === "TD") && tr.cells.length));
      const bodyRows = trs.filter((tr) => !headerRows.includes(tr) && ["TBODY", "TABLE"].includes(tr.parentElement?.tagName));
      const hr = headerRows[headerRows.length - 1];
      return {
        index,
        headers: hr ? [...hr.cells].map((c) => (c.textContent || "").replace(/\s+/g, " ").trim()) : [],
        rows: bodyRows.map((tr) => [...tr.cells].map(clean)),
      };
    });
  }).catch(() => null);
  if (!tables || !tables.length) return null;
  // The tag table: the one with the most rows naming a known tag.
  const nameSet = new Set(names);
  let best = null;
  for (const t of tables) {
    t.score = t.rows.filter((r) => r.some((c) => nameSet.has(nameOf(c, nameSet)))).length;
    if (!best || t.score > best.score) best = t;
  }
  return best;
}

/** The tag name a name cell shows: its whole text (a leading "#" allowed), or else the one known
 * name among its words (a badge such as "orphan" next to the name is fine). */
function nameOf(text, nameSet) {
  const t = (text || "").replace(/^#/, "");
  if (nameSet.has(t)) return t;
  const words = [...new Set(t.split(/\s+/).map((w) => w.replace(/^[#(\[]+|[)\]:,.;]+$/g, "")).filter((w) => nameSet.has(w)))];
  return words.length === 1 ? words[0] : t;
}
/** A count cell's number: the integer it starts with ("3", "3 posts", "0 (orphan)"), else null. */
const num = (t) => {
  const m = (t || "").match(/^(\d+)(?:\D.*)?$/);
  return m ? Number(m[1]) : null;
};

/** Column indices of the names and the counts in a table read by readTable: the names column holds
 * the most known tag names; the counts column is the all-numeric one whose numbers agree best with
 * `expected` (name → count), the header deciding a tie. */
function columns(table, names, expected) {
  const none = { nameCol: -1, countCol: -1, nameSet: new Set(names) };
  if (!table || !table.rows.length) return none;
  const nameSet = new Set(names);
  const width = Math.max(0, ...table.rows.map((r) => r.length));
  let nameCol = -1, bestScore = 0;
  for (let j = 0; j < width; j++) {
    const s = table.rows.filter((r) => nameSet.has(nameOf(r[j], nameSet))).length;
    if (s > bestScore) { bestScore = s; nameCol = j; }
  }
  if (nameCol < 0) return none;
  let countCol = -1, best = null;
  for (let j = 0; j < width; j++) {
    if (j === nameCol || !table.rows.every((r) => num(r[j]) !== null)) continue;
    const agree = expected ? table.rows.filter((r) => expected.get(nameOf(r[nameCol], nameSet)) === num(r[j])).length : 0;
    const header = /count|posts?\b|uses?\b|usage/i.test(table.headers[j] || "") ? 1 : 0;
    const score = agree * 2 + header;
    if (best === null || score > best) { best = score; countCol = j; }
  }
  return { nameCol, countCol, nameSet };
}

function tableState(table, cols) {
  return table.rows.map((r) => ({ name: nameOf(r[cols.nameCol], cols.nameSet), count: num(r[cols.countCol]) }));
}

const cmpFns = [
  (a, b) => a.localeCompare(b),
  (a, b) => a.localeCompare(b, undefined, { sensitivity: "base" }),
  (a, b) => (a < b ? -1 : a > b ? 1 : 0),
  (a, b) => (a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0),
];
function direction(values, cmps) {
  for (const cmp of cmps) {
    let asc = true, desc = true;
    for (let i = 1; i < values.length; i++) {
      const c = cmp(values[i - 1], values[i]);
      if (c > 0) asc = false;
      if (c < 0) desc = false;
    }
    if (asc && !desc) return "asc";
    if (desc && !asc) return "desc";
  }
  return null;
}

async function uiChecks(chromium) {
  const fresh = readDisk();
  const names = [...fresh.counts.keys()];
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    chromiumSandbox: false,
    headless: true,
    timeout: 60000,
    args: ["--headless=new", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  try {
    const pid = browser.process?.()?.pid;
    if (pid && STATE) fs.writeFileSync(path.join(STATE, "chromium.pgid"), String(pid));
  } catch {}
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(15000);
  context.setDefaultNavigationTimeout(30000);

  // Log in: the session cookie lands in the context's jar, shared with its pages.
  let loginNote = "";
  try {
    const res = await context.request.post(BASE + "/api/auth/login", { data: { password: ADMIN_PASSWORD }, timeout: 30000, maxRedirects: 0 });
    if (res.status() >= 400) loginNote = `login failed: POST /api/auth/login → ${res.status()}`;
    const have = (await context.cookies(BASE)).length;
    if (!have) {
      // A Secure cookie on plain http: put its name=value in the jar for this origin.
      const set = res.headersArray().filter((h) => h.name.toLowerCase() === "set-cookie").map((h) => h.value.split(";")[0]);
      const jar = set.map((c) => ({ name: c.slice(0, c.indexOf("=")), value: c.slice(c.indexOf("=") + 1), url: BASE }));
      if (jar.length) await context.addCookies(jar);
      else if (!loginNote) loginNote = "login returned no session cookie";
    }
  } catch (e) {
    loginNote = `login failed: ${e.message}`;
  }

  const newPage = async () => {
    const page = await context.newPage();
    page.on("dialog", (d) => (d.type() === "prompt" ? d.dismiss() : d.accept()).catch(() => {}));
    return page;
  };

  // admin_nav -------------------------------------------------------------------------------------
  try {
    must(!loginNote, loginNote);
    const page = await newPage();
    const res = await page.goto(BASE + "/admin", { waitUntil: "domcontentloaded" });
    must(res && res.status() < 400, `GET /admin → ${res?.status()}`);
    must(new URL(page.url()).pathname.replace(/\/$/, "") === "/admin", `/admin went to ${page.url()} (not logged in?)`);
    const links = await page.$$eval("nav a", (as) => as.map((a) => ({ text: (a.textContent || "").replace(/\s+/g, " ").trim(), href: a.href })));
    must(links.length, "/admin has no <nav> with links");
    const ok = links.some((l) => l.text.toLowerCase() === "tags" && new URL(l.href).pathname.replace(/\/$/, "") === "/admin/tags");
    must(ok, `no <nav> link "Tags" → /admin/tags on /admin; nav links: ${links.map((l) => `${l.text} → ${l.href}`).join("; ").slice(0, 300)}`);
    record("admin_nav", true);
    await page.close();
  } catch (e) {
    record("admin_nav", false, e.message);
  }

  // admin_page ------------------------------------------------------------------------------------
  const openTagsPage = async (page) => {
    const res = await page.goto(BASE + "/admin/tags", { waitUntil: "domcontentloaded" });
    must(res && res.status() < 400, `GET /admin/tags → ${res?.status()}`);
    must(new URL(page.url()).pathname.replace(/\/$/, "") === "/admin/tags", `/admin/tags went to ${page.url()}`);
    // Hydrated before anything is clicked: the load event, then a quiet network (both bounded).
    await page.waitForLoadState("load", { timeout: 20000 }).catch(() => {});
    await page.waitForLoadState("networkidle", { timeout: 5000 }).catch(() => {});
    let t = null;
    const until = Date.now() + 15000;
    while (Date.now() < until) {
      t = (await readTable(page, names)) || t;
      if (t && t.score >= names.length) break;
      await sleep(300);
    }
    must(t, "/admin/tags has no <table>");
    return t;
  };
  const clickHeader = async (page, tableIndex, col) => {
    const handle = await page.evaluateHandle(([ti, col]) => {
      const table = document.querySelectorAll("table")[ti];
      const trs = [...table.querySelectorAll("tr")].filter((tr) => tr.closest("table") === table);
      const headerRows = trs.filter((tr) => tr.parentElement?.tagName === "THEAD" || (![...tr.cells].some((c) => c.tagName === "TD") && tr.cells.length));
      const hr = headerRows[headerRows.length - 1];
      const cell = hr && hr.cells[col];
      if (!cell) return null;
      return cell.querySelector("button, [role=button], a, [onclick]") || cell;
    }, [tableIndex, col]);
    const el = handle.asElement();
    must(el, `the table has no header cell for column ${col + 1}`);
    await el.click({ timeout: 10000 });
    await handle.dispose();
  };
  const waitSorted = async (page, names, cols, key, cmps, not, label) => {
    // Polls until the rows are sorted by `key` in a direction other than `not`, and stable.
    let last = null, lastDir = null, stable = 0;
    const until = Date.now() + 6000;
    await sleep(250);
    while (Date.now() < until) {
      const t = await readTable(page, names);
      if (!t || !t.rows.length) { stable = 0; await sleep(200); continue; }
      const st = tableState(t, cols).map((r) => r[key]);
      const dir = direction(st, cmps);
      const same = JSON.stringify(st) === JSON.stringify(last);
      stable = same ? stable + 1 : 0;
      last = st; lastDir = dir;
      if (dir && dir !== not && stable >= 1) return dir;
      await sleep(200);
    }
    throw new CheckFail(`${label}: the ${key} column reads ${JSON.stringify(last).slice(0, 200)}, ${lastDir ? `still sorted ${lastDir}` : "not sorted"}`);
  };
  try {
    must(!loginNote, loginNote);
    const page = await newPage();
    const t = await openTagsPage(page);
    const cols = columns(t, names, fresh.counts);
    must(cols.nameCol >= 0, `no column of the table holds tag names; rows: ${JSON.stringify(t.rows).slice(0, 200)}`);
    must(cols.countCol >= 0, `no column of the table holds post counts; rows: ${JSON.stringify(t.rows).slice(0, 200)}`);
    const st = tableState(t, cols);
    const shown = new Map(st.map((r) => [r.name, r.count]));
    for (const [n, c] of fresh.counts) {
      must(shown.has(n), `the table has no row for "${n}"${fresh.orphans.has(n) ? " (an orphan)" : ""}`);
      must(shown.get(n) === c, `the table shows "${n}" with count ${shown.get(n)}, the posts on disk give ${c}`);
    }
    must(st.length === fresh.counts.size, `the table has ${st.length} rows for ${fresh.counts.size} tags`);
    // Sorting: count header twice (either direction first, then the other), then the name header twice.
    const numCmp = [(a, b) => a - b];
    must(new Set(st.map((r) => r.count)).size > 1, "all counts are equal: cannot test sorting");
    await clickHeader(page, t.index, cols.countCol);
    const d1 = await waitSorted(page, names, cols, "count", numCmp, null, "after clicking the count header");
    await clickHeader(page, t.index, cols.countCol);
    await waitSorted(page, names, cols, "count", numCmp, d1, "after clicking the count header again");
    await clickHeader(page, t.index, cols.nameCol);
    const d3 = await waitSorted(page, names, cols, "name", cmpFns, null, "after clicking the name header");
    await clickHeader(page, t.index, cols.nameCol);
    await waitSorted(page, names, cols, "name", cmpFns, d3, "after clicking the name header again");
    record("admin_page", true);
    await page.close();
  } catch (e) {
    record("admin_page", false, e.message);
  }

  // client_mutations ------------------------------------------------------------------------------
  try {
    must(!loginNote, loginNote);
    const page = await newPage();
    const t0 = await openTagsPage(page);
    const NEW = "labctl-renamed-in-ui";
    // Columns found once on the fresh table; later reads know the new name too.
    const cols = { ...columns(t0, names, fresh.counts), nameSet: new Set(names.concat(NEW)) };
    must(cols.nameCol >= 0 && cols.countCol >= 0, "the table has no name or count column");
    const used = usedTags(fresh);
    const U1 = used[1], U2 = used[2];
    log(`rename ${U1} → ${NEW}; delete ${U2}`);
    const marker = `m${Date.now()}${Math.random().toString(36).slice(2)}`;
    await page.evaluate((m) => { window.__labctlMarker = m; }, marker);
    const navEntries = await page.evaluate(() => performance.getEntriesByType("navigation").length);
    const reloads = [];
    // Not "framenavigated": router.refresh() (the repo's documented way) fires it for the main
    // frame through history.replaceState, which is no reload. A reload is a new document.
    page.on("request", (r) => { if (r.isNavigationRequest() && r.frame() === page.mainFrame()) reloads.push(`navigation request ${r.url()}`); });
    page.on("domcontentloaded", () => reloads.push("a new document loaded"));

    const rowIndex = async (name) => {
      const t = await readTable(page, names.concat(NEW));
      must(t, "the tag table is gone");
      return { t, i: tableState(t, cols).findIndex((r) => r.name === name) };
    };
    // The same rows, in the same order, as readTable's body rows.
    const rowsLoc = (ti) => page.locator("table").nth(ti).locator("xpath=./tbody/tr[td] | ./tr[td]");

    // Rename U1 through the row's Rename button and the input it shows.
    let { t, i } = await rowIndex(U1);
    must(i >= 0, `no row for "${U1}"`);
    let row = rowsLoc(t.index).nth(i);
    const renameBtn = row.getByRole("button", { name: /rename/i });
    must(await renameBtn.count(), `the row of "${U1}" has no "Rename" button`);
    await renameBtn.first().click();
    const input = row.locator("input:not([type=hidden]):not([type=checkbox]):not([type=radio])");
    try {
      await input.first().waitFor({ state: "visible", timeout: 5000 });
    } catch {
      throw new CheckFail(`clicking "Rename" in the row of "${U1}" shows no input in that row`);
    }
    await input.first().fill(NEW);
    await input.first().press("Enter");
    await sleep(2000);
    if ((await input.count()) && (await input.first().isVisible().catch(() => false))) {
      const save = row.getByRole("button", { name: /save/i });
      if (await save.count()) await save.first().click();
    }
    const waitTable = async (pred, what) => {
      const until = Date.now() + 15000;
      let st = null;
      while (Date.now() < until) {
        const tt = await readTable(page, names.concat(NEW));
        if (tt && tt.rows.length) {
          st = tableState(tt, cols);
          if (pred(st)) return st;
        }
        await sleep(300);
      }
      throw new CheckFail(`${what}; the table shows ${JSON.stringify(st?.map((r) => `${r.name}:${r.count}`))?.slice(0, 250)}`);
    };
    await waitTable((st) => st.some((r) => r.name === NEW && r.count === fresh.counts.get(U1)) && !st.some((r) => r.name === U1),
      `after renaming "${U1}" to "${NEW}" in the UI, the table does not show "${NEW}" (count ${fresh.counts.get(U1)}) in place of "${U1}"`);

    // Delete U2 through the row's Delete button (a confirm() is accepted).
    ({ t, i } = await rowIndex(U2));
    must(i >= 0, `no row for "${U2}"`);
    row = rowsLoc(t.index).nth(i);
    const delBtn = row.getByRole("button", { name: /delete/i });
    must(await delBtn.count(), `the row of "${U2}" has no "Delete" button`);
    await delBtn.first().click();
    await waitTable((st) => !st.some((r) => r.name === U2) && st.some((r) => r.name === NEW),
      `after deleting "${U2}" in the UI, its row is still there`);

    await sleep(500);
    const still = await page.evaluate(() => window.__labctlMarker).catch(() => undefined);
    must(still === marker, "the page was reloaded (a window variable set before the rename is gone)");
    must(!reloads.length, `the page was reloaded: ${reloads[0]}`);
    const navNow = await page.evaluate(() => performance.getEntriesByType("navigation").length);
    must(navNow === navEntries, "the page was reloaded (performance navigation entries changed)");

    const disk = readDisk();
    const why = compareDisk(fresh, disk, (tags) => deleted(U2)(renamed(U1, NEW)(tags)), "after the UI rename and delete");
    must(!why, why);
    must(!disk.counts.has(U1) && !disk.counts.has(U2), `after the UI rename and delete, "${disk.counts.has(U1) ? U1 : U2}" is still in the registry`);
    record("client_mutations", true);
    await page.close();
  } catch (e) {
    record("client_mutations", false, e.message);
  }
  await context.close().catch(() => {});
  await browser.close().catch(() => {});
}

// ------------------------------------------------------------------------------------------------
const main = async () => {
  save();
  if (MODE === "source") return sourceChecks();
  if (MODE === "api") return apiChecks();
  if (MODE === "ui") {
    let chromium;
    try {
      ({ chromium } = loadPlaywright());
    } catch (e) {
      for (const c of ["admin_nav", "admin_page", "client_mutations"]) record(c, false, `verifier error: ${e.message}`);
      return;
    }
    try {
      await uiChecks(chromium);
    } catch (e) {
      for (const c of ["admin_nav", "admin_page", "client_mutations"]) if (!results[c]) record(c, false, `browser error: ${e.message}`);
    }
    return;
  }
  throw new Error(`unknown mode ${MODE}`);
};
main().then(
  () => process.exit(0),
  (e) => { console.error(e); process.exit(1); },
);

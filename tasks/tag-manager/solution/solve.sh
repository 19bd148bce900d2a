#!/usr/bin/env bash
# Reference solution for the tag-manager task, run by the oracle from the repository root.
# Adds the tag library, the admin tags API, the admin page and its nav entry, builds, takes a
# screenshot with Playwright, commits in chunks and pushes. Leaves content/ untouched.
set -euo pipefail

SOLUTION_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FILES="$SOLUTION_DIR/files"
export NEXT_TELEMETRY_DISABLED=1

log() { printf '[solve] %s\n' "$*"; }

# Copies files from solution/files into the same paths here (the mount is read-only).
put() {
  local rel
  for rel in "$@"; do
    mkdir -p "$(dirname "$rel")"
    install -m 0644 "$FILES/$rel" "$rel"
  done
}

# Commits the given paths, with a fallback identity only when none is configured.
commit() {
  local message=$1
  shift
  git add -- "$@"
  if [ -n "$(git config user.name || true)" ] && [ -n "$(git config user.email || true)" ]; then
    git commit -q -m "$message"
  else
    git -c user.name="Quillpost Oracle" -c user.email="oracle@quillpost.invalid" commit -q -m "$message"
  fi
  log "committed: $message"
}

# 1. The tag library.
put src/lib/tags.ts
commit "Add tag library: counts, orphans, rename, merge and delete" src/lib/tags.ts

# 2. The admin tags API.
put src/app/api/admin/tags/route.ts
commit "Add /api/admin/tags: list, rename/merge (PATCH) and delete" src/app/api/admin/tags/route.ts

# 3. The admin page and its nav entry.
put src/app/admin/tags/page.tsx src/app/admin/tags/TagTable.tsx \
  src/app/admin/tags/TagTable.module.css
# One entry in the nav's items array, after Posts (an edit, not a copy: the base file stays the
# source of truth).
sed -i 's|^\(  { href: "/admin/posts", label: "Posts" },\)$|\1\n  { href: "/admin/tags", label: "Tags" },|' \
  src/components/AdminNav.tsx
grep -q '"/admin/tags"' src/components/AdminNav.tsx || { echo "solve.sh: AdminNav not patched" >&2; exit 1; }
commit "Add the admin tag manager page and a Tags entry in AdminNav" \
  src/app/admin/tags src/components/AdminNav.tsx

# 4. Build, serve, screenshot.
log "building"
npm run build

port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
log "starting next start on 127.0.0.1:$port"
server_log=$(mktemp)
set -m # the server gets its own process group, so the trap can stop all of it
node_modules/.bin/next start -H 127.0.0.1 -p "$port" >"$server_log" 2>&1 &
server_pid=$!
set +m
stop_server() {
  kill -TERM -- "-$server_pid" 2>/dev/null || kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT

mkdir -p screenshots
if ! node "$SOLUTION_DIR/screenshot.cjs" "http://127.0.0.1:$port" screenshots/admin-tags.png; then
  log "screenshot failed; server log:"
  cat "$server_log" >&2
  exit 1
fi
stop_server
trap - EXIT
commit "Add a screenshot of the admin tag manager" screenshots/admin-tags.png

# The build and the screenshot must not have touched the content.
if ! git diff --quiet HEAD -- content; then
  log "content/ changed; restoring it" >&2
  git checkout HEAD -- content
fi

# 5. Publish the branch. No pull request.
git push -q origin HEAD
log "pushed $(git rev-parse --abbrev-ref HEAD) to origin"

#!/usr/bin/env bash
# Grades the tag-manager task: ten named checks, one per requirement of instruction.md, written to
# $LABCTL_REWARD_DIR/reward.json (default /logs/verifier) with a note for every check that failed.
# reward is 1 only when all ten pass. Every check keeps its own reason whatever else failed: with a
# failed build the file halves of api_route, admin_page and admin_nav still say what is missing, and
# the build's note is the first real compiler or bundler error (tests/build-error.mjs).
#
# Order: git-side checks on the workspace as the agent left it (screenshot, logical_commits, pushed,
# no_pr),
# then source checks (tags_lib), then content/ is restored to the base commit, node_modules replaced
# by a pristine copy, `npm run build`; then checks.mjs against `next start`: first the API (it
# mutates content/), then content/ is restored again and a fresh server serves the browser checks
# (admin_nav, admin_page, client_mutations).
#
# Overridable for testing outside the task image: LABCTL_WORKSPACE, LABCTL_ORIGIN, LABCTL_REWARD_DIR,
# QUILLPOST_DEPS, ADMIN_PASSWORD, CHROMIUM_PATH, PLAYWRIGHT_CORE.
set -u

WS=${LABCTL_WORKSPACE:-/workspace}
ORIGIN=${LABCTL_ORIGIN:-/origin.git}
REWARD_DIR=${LABCTL_REWARD_DIR:-/logs/verifier}
DEPS=${QUILLPOST_DEPS:-/opt/quillpost/node_modules}
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export ADMIN_PASSWORD=${ADMIN_PASSWORD:-quillpost-admin}
export CHROMIUM_PATH=${CHROMIUM_PATH:-/usr/bin/chromium}
export NEXT_TELEMETRY_DISABLED=1
# safe.directory for the workspace and origin (owned by the agent's uid); labctl also sets it globally.
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'
export GIT_TERMINAL_PROMPT=0

CHECKS=(tags_lib api_route admin_page admin_nav client_mutations build screenshot logical_commits pushed
        no_pr)
STATE=$(mktemp -d /tmp/labctl-verifier.XXXXXX)
mkdir -p "$STATE/checks" "$STATE/notes" "$REWARD_DIR"
for c in "${CHECKS[@]}"; do echo false > "$STATE/checks/$c"; done
START=$SECONDS
SERVER_PGID=""

commits() { case ${1:-0} in 0) echo "no commit" ;; 1) echo "1 commit" ;; *) echo "$1 commits" ;; esac; }
log() { printf '[verifier %4ds] %s\n' "$((SECONDS - START))" "$*"; }
pass() { echo true > "$STATE/checks/$1"; rm -f "$STATE/notes/$1"; }
fail() { echo false > "$STATE/checks/$1"; printf '%s' "$2" > "$STATE/notes/$1"; }
# Seconds left before the 900 s verifier limit, less a margin for cleanup and writing the reward.
left() { echo $((840 - (SECONDS - START))); }
json_str() {  # a JSON string literal of $1 (control characters dropped, at most 600 characters)
  local s=${1:0:600}
  s=${s//\\/\\\\}; s=${s//\"/\\\"}
  s=$(printf '%s' "$s" | tr -d '\000-\037')
  printf '"%s"' "$s"
}

write_reward() {
  local all=1 first=1 c v checks="" notes=""
  for c in "${CHECKS[@]}"; do
    v=$(cat "$STATE/checks/$c" 2>/dev/null)
    [ "$v" = true ] || { v=false; all=0; }
    [ $first = 1 ] || checks+=", "
    checks+="\"$c\": $v"
    if [ "$v" = false ]; then
      local n; n=$(cat "$STATE/notes/$c" 2>/dev/null); [ -n "$n" ] || n="not checked (the verifier stopped early)"
      [ -z "$notes" ] || notes+=", "
      notes+="\"$c\": $(json_str "$n")"
    fi
    first=0
  done
  printf '{"reward": %d, "checks": {%s}, "notes": {%s}}\n' "$all" "$checks" "$notes" > "$REWARD_DIR/reward.json"
  echo "================ tag-manager verifier summary ================"
  for c in "${CHECKS[@]}"; do
    v=$(cat "$STATE/checks/$c" 2>/dev/null)
    if [ "$v" = true ]; then printf '  PASS  %s\n' "$c"
    else printf '  FAIL  %s: %s\n' "$c" "$(cat "$STATE/notes/$c" 2>/dev/null || echo "not checked (the verifier stopped early)")"; fi
  done
  echo "  reward: $all   (verifier time: $((SECONDS - START)) s)"
  cat "$REWARD_DIR/reward.json"
}

stop_server() {
  if [ -n "$SERVER_PGID" ]; then
    kill -TERM -- "-$SERVER_PGID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- "-$SERVER_PGID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$SERVER_PGID" 2>/dev/null
    SERVER_PGID=""
  fi
}
kill_pidfiles() {  # process groups that checks.mjs recorded (Chromium is launched in its own group)
  local f p
  for f in "$STATE"/*.pgid; do
    [ -f "$f" ] || continue
    p=$(cat "$f"); [ -n "$p" ] && kill -KILL -- "-$p" 2>/dev/null
    rm -f "$f"
  done
}
cleanup() {
  trap - EXIT INT TERM
  stop_server; kill_pidfiles
  write_reward
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if ! cd "$WS" 2>/dev/null; then
  for c in "${CHECKS[@]}"; do fail "$c" "no workspace at $WS"; done
  exit 0
fi

# ---------------------------------------------------------------------------------------------------
# Git: base commit, branch, origin.
ROOT=$(git rev-list --max-parents=0 HEAD 2>/dev/null | tail -n1)
BRANCH=$(git symbolic-ref -q --short HEAD 2>/dev/null)
HEAD_SHA=$(git rev-parse -q --verify HEAD 2>/dev/null)
log "workspace $WS, branch '${BRANCH:-<detached>}', base ${ROOT:-?}, HEAD ${HEAD_SHA:-?}"

# 10. no_pr — the gh stand-in appends to this file on any attempt to open a pull request.
PR_LOG="$ORIGIN/labctl-pull-requests.log"
if [ -s "$PR_LOG" ]; then
  fail no_pr "a pull request was attempted: $(head -c 200 "$PR_LOG" | tr '\n\t' '  ')"
else
  pass no_pr
fi

# 8. logical_commits — the work is committed in chunks: ≥ 2 commits beyond the base on the branch.
# 9. pushed — origin's branch holds ≥ 1 commit beyond the base and the workspace's HEAD (everything
# committed is pushed). Two requirements, two checks: one pushed commit is "pushed working code"
# (the published Partial) without being "logical chunks".
local_count=0
[ -n "$ROOT" ] && [ -n "$HEAD_SHA" ] && local_count=$(git rev-list --count "$ROOT..HEAD" 2>/dev/null || echo 0)
if [ -z "$HEAD_SHA" ]; then
  fail logical_commits "the workspace has no commits"
elif [ "${local_count:-0}" -lt 2 ]; then
  fail logical_commits "the branch has $(commits "$local_count") beyond the base (need at least 2)"
else
  pass logical_commits
fi
if [ -z "$ROOT" ] || [ -z "$HEAD_SHA" ]; then
  fail pushed "the workspace has no commits"
elif [ -z "$BRANCH" ]; then
  fail pushed "HEAD is detached: no current branch to look for on origin"
elif ! git --git-dir="$ORIGIN" rev-parse -q --verify "refs/heads/$BRANCH^{commit}" >/dev/null 2>&1; then
  fail pushed "branch $BRANCH does not exist on origin"
else
  ocount=$(git --git-dir="$ORIGIN" rev-list --count "$ROOT..refs/heads/$BRANCH" 2>/dev/null || echo 0)
  contained=false
  if git --git-dir="$ORIGIN" cat-file -e "$HEAD_SHA^{commit}" 2>/dev/null \
     && git --git-dir="$ORIGIN" merge-base --is-ancestor "$HEAD_SHA" "refs/heads/$BRANCH" 2>/dev/null; then
    contained=true
  fi
  if [ "${ocount:-0}" -lt 1 ]; then
    if [ "${local_count:-0}" -gt 0 ]; then
      fail pushed "nothing pushed: origin/$BRANCH is the base commit; the workspace has $(commits "$local_count") not pushed"
    else
      fail pushed "nothing committed or pushed: origin/$BRANCH is the base commit"
    fi
  elif [ $contained != true ]; then
    fail pushed "the workspace HEAD ${HEAD_SHA:0:12} is not on origin/$BRANCH (committed work not pushed)"
  else
    pass pushed
  fi
fi
log "logical_commits: $(cat "$STATE/checks/logical_commits") $(cat "$STATE/notes/logical_commits" 2>/dev/null)"
log "pushed: $(cat "$STATE/checks/pushed") $(cat "$STATE/notes/pushed" 2>/dev/null)"

# 7. screenshot — a real PNG (> 1 KB, larger than 100x100) in the workspace that the base commit does
# not hold (neither at its path nor anywhere as the same blob). Dependencies, build output and git
# internals are not the repository's own files.
declare -A BASE_BLOBS=()
if [ -n "$ROOT" ]; then
  while read -r _ _ sha _; do BASE_BLOBS[$sha]=1; done < <(git ls-tree -r "$ROOT" 2>/dev/null)
fi
shot=""; shot_why="no PNG file found in the repository"
while IFS= read -r -d '' f; do
  sz=$(stat -c %s "$f" 2>/dev/null || echo 0)
  sig=$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')
  if [ "$sig" != 89504e470d0a1a0a ]; then shot_why="$f is not a PNG (bad signature)"; continue; fi
  if [ "$sz" -le 1024 ]; then shot_why="$f is only $sz bytes"; continue; fi
  ihdr=$(head -c 24 "$f" | tail -c 12 | od -An -tx1 | tr -d ' \n')   # "IHDR" + width + height
  if [ "${ihdr:0:8}" != 49484452 ]; then shot_why="$f has no IHDR chunk"; continue; fi
  w=$((16#${ihdr:8:8})); h=$((16#${ihdr:16:8}))
  if [ "$w" -le 100 ] || [ "$h" -le 100 ]; then shot_why="$f is only ${w}x${h}"; continue; fi
  blob=$(git hash-object "$f" 2>/dev/null)
  if [ -n "$blob" ] && [ -n "${BASE_BLOBS[$blob]:-}" ]; then shot_why="$f is already in the base commit"; continue; fi
  shot="$f (${w}x${h}, $sz bytes)"; break
done < <(find . \( -path ./node_modules -o -path ./.next -o -path ./.git -o -name node_modules \) -prune \
           -o -type f -iname '*.png' -print0 2>/dev/null | sort -z)
if [ -n "$shot" ]; then pass screenshot; log "screenshot: $shot"; else fail screenshot "$shot_why"; fi

# 1. tags_lib and the source half of 2 (api_route) and 4 (admin_nav).
node "$TESTS_DIR/checks.mjs" source "$WS" "$STATE/source.json" 2>&1 | sed 's/^/  /'
SOURCE_JSON="$STATE/source.json"
src_get() { node -e 'const r=require(process.argv[1]);const v=r[process.argv[2]]||{};process.stdout.write((v.ok?"true":"false")+"\t"+(v.note||""))' "$SOURCE_JSON" "$1" 2>/dev/null || printf 'false\tsource check crashed'; }
IFS=$'\t' read -r ok note < <(src_get tags_lib)
if [ "$ok" = true ]; then pass tags_lib; else fail tags_lib "${note:-source check failed}"; fi

# ---------------------------------------------------------------------------------------------------
# Known content, pristine dependencies, build.
restore_content() {
  [ -n "$ROOT" ] || return 1
  git checkout -q "$ROOT" -- content 2>/dev/null || { rm -rf content; git checkout -q "$ROOT" -- content; } || return 1
  # Files the base commit does not have under content/ (tracked by a later commit or untracked).
  git diff --name-only --diff-filter=A "$ROOT" -- content 2>/dev/null | while IFS= read -r p; do rm -f -- "$p"; done
  git clean -fdxq -- content 2>/dev/null
  return 0
}
if ! restore_content; then log "could not restore content/ from the base commit"; fi

if [ -d "$DEPS" ]; then
  rm -rf node_modules && cp -a "$DEPS" node_modules
else
  log "no pristine dependencies at $DEPS: building with the workspace's own node_modules"
fi
rm -rf .next

log "npm run build (up to $(( $(left) - 300 )) s)"
BUILD_OK=false
if timeout -k 10 $(( $(left) - 300 )) npm run build > "$REWARD_DIR/build.log" 2>&1; then
  BUILD_OK=true; pass build
else
  rc=$?
  if [ $rc = 124 ] || [ $rc = 137 ]; then fail build "npm run build timed out (see build.log)"
  else fail build "npm run build exited $rc: $(node "$TESTS_DIR/build-error.mjs" "$REWARD_DIR/build.log" 2>/dev/null \
                   || grep -m1 -iE 'error|failed' "$REWARD_DIR/build.log" | head -c 300)"; fi
fi
log "build: $BUILD_OK"

# ---------------------------------------------------------------------------------------------------
free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
start_server() {  # $1: log file. Sets BASE_URL and SERVER_PGID; returns 1 when it never answers.
  local port; port=$(free_port)
  BASE_URL="http://127.0.0.1:$port"
  setsid node node_modules/next/dist/bin/next start -H 127.0.0.1 -p "$port" > "$1" 2>&1 < /dev/null &
  SERVER_PGID=$!
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null --max-time 2 "$BASE_URL/" 2>/dev/null; then return 0; fi
    kill -0 "$SERVER_PGID" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
run_checks() {  # $1 mode, $2 output json, $3 timeout, $4 the server's log (kept next to reward.json)
  timeout -k 5 "$3" node "$TESTS_DIR/checks.mjs" "$1" "$WS" "$2" "$BASE_URL" "$STATE" 2>&1 | sed 's/^/  /'
  kill_pidfiles
  cp "$4" "$REWARD_DIR/server-$1.log" 2>/dev/null
}
apply_results() {  # $1 results json, then the check names it holds
  local f=$1; shift
  local c ok note
  for c in "$@"; do
    IFS=$'\t' read -r ok note < <(node -e 'let r={};try{r=require(process.argv[1])}catch{};const v=r[process.argv[2]];if(!v){process.stdout.write("false\tthe check did not finish (timed out or crashed)");process.exit(0)};process.stdout.write((v.ok?"true":"false")+"\t"+String(v.note||"").replace(/[\t\n]/g," "))' "$f" "$c")
    if [ "$ok" = true ]; then pass "$c"; else fail "$c" "${note:-failed}"; fi
  done
}

run_app_checks() {
  # 2. api_route, against a server on the restored content.
  if start_server "$STATE/server-api.log"; then
    log "next start at $BASE_URL: API checks"
    run_checks api "$STATE/api.json" $(( $(left) > 400 ? 150 : $(left) / 3 )) "$STATE/server-api.log"
    apply_results "$STATE/api.json" api_route
  else
    fail api_route "next start did not answer: $(tail -c 300 "$STATE/server-api.log" | tr '\n' ' ')"
  fi
  stop_server

  # 3–5. Browser checks, on freshly restored content and a fresh server.
  restore_content
  if start_server "$STATE/server-ui.log"; then
    log "next start at $BASE_URL: browser checks"
    run_checks ui "$STATE/ui.json" $(( $(left) - 20 )) "$STATE/server-ui.log"
    apply_results "$STATE/ui.json" admin_nav admin_page client_mutations
  else
    for c in admin_nav admin_page client_mutations; do
      fail "$c" "next start did not answer: $(tail -c 300 "$STATE/server-ui.log" | tr '\n' ' ')"
    done
  fi
  stop_server
}

if [ $BUILD_OK = true ]; then
  run_app_checks
else
  for c in api_route admin_page admin_nav client_mutations; do
    fail "$c" "not tried in the running app: the build failed"
  done
fi
# The file halves (from the source pass): a failing one fails the check, its reason first.
for c in api_route admin_page admin_nav; do
  IFS=$'\t' read -r ok note < <(src_get "$c")
  [ "$ok" = true ] && continue
  if [ "$(cat "$STATE/checks/$c")" = true ]; then fail "$c" "$note"
  else fail "$c" "$note; $(cat "$STATE/notes/$c" 2>/dev/null)"; fi
done
# client_mutations happen on the admin page: a missing page is its first reason too.
IFS=$'\t' read -r ok note < <(src_get admin_page)
if [ "$ok" != true ] && [ "$(cat "$STATE/checks/client_mutations")" != true ]; then
  fail client_mutations "$note; $(cat "$STATE/notes/client_mutations" 2>/dev/null)"
fi
exit 0

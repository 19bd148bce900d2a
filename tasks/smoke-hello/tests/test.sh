#!/usr/bin/env bash
# Grades the smoke task: one named check per requirement, written to /logs/verifier/reward.json.
set -u
cd "${LABCTL_WORKSPACE:-/workspace}" || exit 1
mkdir -p /logs/verifier

greeting_file=false; greeting_text=false; committed=false
[ -f hello.txt ] && greeting_file=true
[ "$(cat hello.txt 2>/dev/null)" = "Hello, lab!" ] && greeting_text=true
# Committed and pushed: the branch on origin holds hello.txt with the right text.
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null)
if git fetch -q origin "$branch" 2>/dev/null \
   && [ "$(git show "FETCH_HEAD:hello.txt" 2>/dev/null)" = "Hello, lab!" ]; then
  committed=true
fi

reward=0
$greeting_file && $greeting_text && $committed && reward=1
cat > /logs/verifier/reward.json <<JSON
{"reward": $reward, "checks": {"greeting_file": $greeting_file, "greeting_text": $greeting_text, "committed": $committed}}
JSON
cat /logs/verifier/reward.json

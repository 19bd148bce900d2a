#!/usr/bin/env bash
# Grades the task: named checks in /logs/verifier/reward.json (Harbor's flat form).
mkdir -p /logs/verifier
cd "${LABCTL_WORKSPACE:-/workspace}" || exit 1
ok=0; branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null)
if git fetch -q origin "$branch" 2>/dev/null && [ "$(git show FETCH_HEAD:NOTE.md 2>/dev/null)" = "noted" ]; then ok=1; fi
printf '{"reward": %d, "note_committed": %d}\n' "$ok" "$ok" > /logs/verifier/reward.json

#!/usr/bin/env bash
# Grades the task: named checks in /logs/verifier/reward.json (Harbor's flat form).
mkdir -p /logs/verifier
ok=0; [ "$(cat /app/count.txt 2>/dev/null | tr -d " ")" = "1" ] && ok=1
printf '{"reward": %d, "count_written": %d}\n' "$ok" "$ok" > /logs/verifier/reward.json

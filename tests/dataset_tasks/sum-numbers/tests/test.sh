#!/usr/bin/env bash
# Grades the task: named checks in /logs/verifier/reward.json (Harbor's flat form).
mkdir -p /logs/verifier
ok=0; [ "$(cat /app/sum.txt 2>/dev/null)" = "15" ] && ok=1
printf '{"reward": %d, "sum_written": %d}\n' "$ok" "$ok" > /logs/verifier/reward.json

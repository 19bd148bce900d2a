#!/usr/bin/env bash
# Grades the task: named checks in /logs/verifier/reward.json (Harbor's flat form).
mkdir -p /logs/verifier
ok=0; [ "$(cat /app/report/summary.txt 2>/dev/null)" = "lines: 3" ] && ok=1
printf '{"reward": %d, "report_written": %d}\n' "$ok" "$ok" > /logs/verifier/reward.json

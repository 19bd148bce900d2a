#!/usr/bin/env bash
# Grades the task: named checks in /logs/verifier/reward.json (Harbor's flat form).
mkdir -p /logs/verifier
up=0; kept=0
[ "$(cat /app/GREETING.txt 2>/dev/null)" = "HELLO DATASET" ] && up=1
[ "$(cat /app/greeting.txt 2>/dev/null)" = "hello dataset" ] && kept=1
printf '{"reward": %d, "upper_written": %d, "original_kept": %d}\n' "$((up * kept))" "$up" "$kept" > /logs/verifier/reward.json

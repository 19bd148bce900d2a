#!/usr/bin/env bash
# Harbor's flat reward.json: the reward plus one numeric key per named check.
mkdir -p /logs/verifier
script_fixed=0; result_written=0; config_written=0
grep -qx 'OP=mean' /app/stats.sh && [ "$(/app/stats.sh)" = "4" ] && script_fixed=1
[ "$(cat /app/result.txt 2>/dev/null)" = "4" ] && result_written=1
[ "$(cat /etc/stats.conf 2>/dev/null)" = "mode=mean" ] && config_written=1
reward=$(( script_fixed * result_written * config_written ))
printf '{"reward": %d, "script_fixed": %d, "result_written": %d, "config_written": %d}\n' \
  "$reward" "$script_fixed" "$result_written" "$config_written" > /logs/verifier/reward.json
cat /logs/verifier/reward.json

#!/usr/bin/env bash
# Checks what the agent left; writes one named check per requirement to reward.json.
set -u
mkdir -p /logs/verifier
ok=false
[ "$(cat hello.txt 2>/dev/null)" = "Hello, lab!" ] && ok=true
reward=0; $ok && reward=1
printf '{"reward": %s, "checks": {"hello": %s}}\n' "$reward" "$ok" > /logs/verifier/reward.json

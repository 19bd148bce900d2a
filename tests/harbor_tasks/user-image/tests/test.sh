#!/usr/bin/env bash
# Passes only when the image's own user did the work, in the image's WORKDIR.
ok=1
[ "$(cat /app/greeting.txt 2>/dev/null)" = "hello from builder" ] || ok=0
[ "$(stat -c %U /app/greeting.txt 2>/dev/null)" = "builder" ] || ok=0
[ -f /home/builder/.greeted ] || ok=0
echo "$ok" > /logs/verifier/reward.txt
echo "reward $ok (as $(id -un))"

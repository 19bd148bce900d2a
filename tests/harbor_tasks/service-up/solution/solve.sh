#!/bin/bash
# Start the service detached from this shell (its own session, output to a log), then wait until it
# answers: the tests run after this script and the agent's session have ended.
set -euo pipefail
setsid nohup perl /app/serve.pl > /tmp/serve.log 2>&1 < /dev/null &
for _ in $(seq 1 50); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    echo "service up"
    exit 0
  fi
  sleep 0.1
done
echo "service did not come up" >&2
exit 1

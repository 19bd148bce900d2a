#!/bin/bash
# Terminal-Bench 2 style: every check's verdict on stderr, reward 1 or 0, and exit 0 either way.

fail() {
  echo "FAILED: $*" >&2
  echo 0 > /logs/verifier/reward.txt
  exit 0
}

# The task's memory limit (`memory = "1G"`) is the container's: cgroup v2, else v1.
limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
echo "memory limit: $limit"
[ "$limit" = 1073741824 ] || fail "memory limit is $limit, not 1G"

{ exec 3<>/dev/tcp/127.0.0.1/8080; } 2>/dev/null || fail "nothing listens on port 8080 (connection refused)"
printf 'GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
reply=$(cat <&3)
echo "$reply"
case "$reply" in
  "HTTP/1.0 200"*) ;;
  *) fail "GET /status did not answer 200" ;;
esac
[ "${reply##*$'\r\n\r\n'}" = ok ] || fail "GET /status answered a body other than ok"
echo 1 > /logs/verifier/reward.txt
echo "PASSED: the service answers GET /status with ok"

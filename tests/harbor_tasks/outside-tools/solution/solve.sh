#!/bin/bash
set -euo pipefail
# The archive is unsigned: trust it explicitly, in place of the image's own (signed) source list.
echo 'deb [trusted=yes] http://deb.debian.org/debian bookworm main' > /etc/apt/sources.list.d/hello.list
rm -f /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list
apt-get update
apt-get install -y hello-svc
setsid nohup hello-svc > /var/log/hello-svc.log 2>&1 < /dev/null &
for _ in $(seq 1 50); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    echo "hello-svc up"
    exit 0
  fi
  sleep 0.1
done
echo "hello-svc did not come up" >&2
exit 1

#!/bin/sh
# Make `python3 -m venv` work: keep the task image's Python when it is >= 3.10 with venv/ensurepip,
# else install the distribution's python3 (+ venv) — Debian/Ubuntu, Alpine or Fedora-like images.
set -eu
ok() {
    command -v python3 >/dev/null 2>&1 \
      && python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}
ok && exit 0
if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    rm -rf /var/lib/apt/lists/*
elif command -v apk >/dev/null 2>&1; then
    apk add --no-cache python3
elif command -v dnf >/dev/null 2>&1; then
    dnf install -y python3 && dnf clean all
fi
ok || { echo "ensure-python: no python3 >= 3.10 with venv in this image" >&2; exit 1; }

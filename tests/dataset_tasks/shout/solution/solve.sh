#!/usr/bin/env bash
# The reference solution, run by the oracle.
set -euo pipefail
tr '[:lower:]' '[:upper:]' < /app/greeting.txt > /app/GREETING.txt

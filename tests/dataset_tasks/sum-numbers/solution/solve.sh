#!/usr/bin/env bash
# The reference solution, run by the oracle.
set -euo pipefail
awk '{ s += $1 } END { print s }' /app/numbers.txt > /app/sum.txt

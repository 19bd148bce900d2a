#!/usr/bin/env bash
# The reference solution, run by the oracle.
set -euo pipefail
# Wrong on purpose: counts the other file's lines (3, not 1), so this task's controls fail.
wc -l < /app/numbers.txt > /app/count.txt

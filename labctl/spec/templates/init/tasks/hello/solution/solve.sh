#!/usr/bin/env bash
# The reference solution, run by the oracle contestant.
set -euo pipefail
printf 'Hello, lab!\n' > hello.txt
git add hello.txt && git commit -qm "Add hello.txt" && git push -q origin HEAD

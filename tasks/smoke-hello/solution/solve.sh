#!/usr/bin/env bash
# Reference solution, run by the oracle contestant.
set -euo pipefail
printf 'Hello, lab!\n' > hello.txt
git add hello.txt
git commit -q -m "Add greeting"
git push -q origin HEAD

#!/usr/bin/env bash
# The reference solution, run by the oracle.
set -euo pipefail
echo noted > NOTE.md
git add NOTE.md
git commit -q -m "Add a note"
git push -q origin HEAD

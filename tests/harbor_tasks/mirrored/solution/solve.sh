#!/usr/bin/env bash
# Reference solution, run by the oracle in its working directory.
set -euo pipefail
cp /opt/mirrored/greeting.txt answer.txt

#!/usr/bin/env bash
set -euo pipefail
./greet.sh
touch ~/.greeted

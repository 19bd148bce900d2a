#!/usr/bin/env bash
# The reference solution: edits and runs the root-owned files in the WORKDIR, writes under /etc.
set -euo pipefail
sed -i 's/^OP=sum$/OP=mean/' stats.sh
./stats.sh > result.txt
echo "mode=mean" > /etc/stats.conf

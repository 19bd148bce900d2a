#!/bin/sh
# Prints a statistic of the numbers in data.txt (one per line).
OP=sum
awk -v op="$OP" '{ s += $1; n++ } END { if (op == "mean") print s / n; else print s }' /app/data.txt

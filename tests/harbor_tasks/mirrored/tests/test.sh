#!/usr/bin/env bash
# Reward 1 when answer.txt in the working directory equals the image's greeting file, else 0.
set -u
mkdir -p /logs/verifier
if cmp -s answer.txt /opt/mirrored/greeting.txt; then echo 1; else echo 0; fi > /logs/verifier/reward.txt
cat /logs/verifier/reward.txt

#!/bin/sh
echo "hello from $(id -un)" > /app/greeting.txt

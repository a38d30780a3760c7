#!/bin/sh
# Test handler: ignores SIGTERM and SIGINT and never finishes on its own.
trap '' TERM INT
while :; do sleep 1; done

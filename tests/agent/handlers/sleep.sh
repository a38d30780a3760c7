#!/bin/sh
# Test handler: sleeps for $1 seconds (default 30).
sleep "${1:-30}"
echo slept

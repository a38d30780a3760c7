#!/bin/sh
# Test handler: echoes the event with a prefix, logs to stderr, shows env.
echo "log line from shell handler" >&2
printf 'hello:%s:%s' "$GREETING" "$(cat)"

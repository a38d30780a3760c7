#!/bin/sh
# The example function: reads the event from stdin, answers on stdout.
# Anything written to stderr becomes the invocation's logs.
event=$(cat)
echo "hello handler got ${#event} bytes" >&2
printf '{"message": "%s from hearth", "event": %s}\n' "$GREETING" "${event:-null}"

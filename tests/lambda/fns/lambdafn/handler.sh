#!/bin/sh
# Lambda API test function: the event (JSON) selects a behaviour by a keyword in it.
event=$(cat)
case "$event" in
*handled-json*) echo "failing the Lambda way" >&2
	printf '{"errorMessage": "bad input", "errorType": "ValidationError"}'; exit 1 ;;
*handled*) echo "failing with 3" >&2; echo "plain failure"; exit 3 ;;
*crash*) echo "about to crash" >&2; kill -SEGV $$ ;;
*timeout*) sleep 30 ;;
*manylogs*) i=0; while [ $i -lt 300 ]; do echo "log line $i of a chatty function" >&2; i=$((i+1)); done
	echo '"logged"' ;;
*) echo "lambdafn got ${#event} bytes" >&2; printf '{"echo": %s}' "${event:-null}" ;;
esac

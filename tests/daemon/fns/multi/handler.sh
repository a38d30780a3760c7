#!/bin/sh
# Daemon test function: its event selects a behaviour.
event=$(cat)
case "$event" in
crash) echo "about to crash" >&2; kill -SEGV $$ ;;
timeout) sleep 30 ;;
exit4) echo "failing with 4" >&2; exit 4 ;;
killagent) kill -9 $PPID; sleep 5 ;;
slow) sleep 0.3; echo "slow done" ;;
sigs) while read -r k v; do case "$k" in SigBlk:|SigIgn:) echo "$k $v" ;; esac; done </proc/self/status ;;
*) printf 'multi:%s' "$event" ;;
esac

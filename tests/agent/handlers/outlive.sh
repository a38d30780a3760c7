#!/bin/sh
# Test handler: leaves children behind, one in its process group holding stdout
# open, and one that escaped with setsid, then returns at once.
sleep 60 &
echo "child=$!"
setsid sleep 61 > /dev/null 2>&1 < /dev/null &
echo done

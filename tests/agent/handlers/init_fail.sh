#!/bin/sh
echo "init cannot load its config" >&2
exit 1

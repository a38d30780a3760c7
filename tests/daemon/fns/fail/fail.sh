#!/bin/sh
echo "this function always fails" >&2
exit 1

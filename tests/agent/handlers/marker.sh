#!/bin/sh
cat "$MARKER"

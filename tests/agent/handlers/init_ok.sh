#!/bin/sh
# Test init step: leaves a marker the handler can read, like loading a model.
echo initialised > "${MARKER:-/tmp/hearth-marker}"

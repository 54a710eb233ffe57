#!/bin/sh
# Runs the command as a child and waits for it (no exec), as many image entrypoints do.
echo "test entrypoint: starting $1"
"$@"
status=$?
echo "test entrypoint: the command exited with status $status"
exit "$status"

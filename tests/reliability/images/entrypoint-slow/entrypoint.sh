#!/bin/sh
# Slow set-up, then the kernel replaces the shell.
echo "test entrypoint: setting up"
sleep 2
exec "$@"

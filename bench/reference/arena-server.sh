#!/bin/sh
# Wrapper so tools that start partyroom's arena binary (`$ARENA_BIN --port 0 --memory`)
# can start the original @signe/room reference server instead.
# `--memory` is accepted and ignored by arena-server.mjs (storage is always in memory).
DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
exec node "$DIR/arena-server.mjs" "$@"

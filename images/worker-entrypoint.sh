#!/bin/sh
# hal9000 worker entrypoint (runs under tini, which is PID 1).
# No arguments: stay idle, so that `docker exec -it <worker> claude` can attach
# sessions to a long-lived (possibly pre-warmed) container. The idle sleep
# replaces this shell (one process fewer per idle worker, ~0.2 MiB of host
# memory each); `docker stop` ends it by TERM and tini, started with -e 143,
# reports that as status 0.
# With arguments: run them in place of this shell (exec keeps signals direct).
set -eu

# CLAUDE_HOME may be a fresh tmpfs or bind mount; create it if we are allowed.
if [ -n "${CLAUDE_HOME:-}" ] && [ ! -d "$CLAUDE_HOME" ]; then
    mkdir -p "$CLAUDE_HOME" 2>/dev/null || true
fi

# The installation's plugins (a read-only volume) where Claude Code looks for them; a home that
# already has its own plugins directory keeps it.
if [ -d /opt/hal9000/plugins ] && [ -d "${CLAUDE_HOME:-/nonexistent}" ] \
   && [ ! -e "$CLAUDE_HOME/plugins" ] && [ ! -L "$CLAUDE_HOME/plugins" ]; then
    ln -s /opt/hal9000/plugins "$CLAUDE_HOME/plugins" 2>/dev/null || true
fi

# The API key stays in its read-only file: Claude Code reads it through apiKeyHelper,
# so it never enters the environment (and never shows in docker inspect).
if [ -r /run/secrets/anthropic_key ] && [ -d "${CLAUDE_HOME:-/nonexistent}" ] \
   && [ ! -e "$CLAUDE_HOME/settings.json" ]; then
    printf '{\n  "apiKeyHelper": "cat /run/secrets/anthropic_key"\n}\n' > "$CLAUDE_HOME/settings.json" 2>/dev/null || true
fi

if [ "$#" -eq 0 ]; then
    exec sleep infinity
fi
exec "$@"

#!/bin/sh
# The hal9000 tmux dashboard: status, a live worker table and resource use.
# Idempotent: an existing session is left as it is.
# Panes are addressed by their IDs, never by index (the reference broke on pane-base-index).
set -eu
tmux_hal() { tmux -L hal9000 -f /opt/hal9000/bin/tmux-dashboard.conf "$@"; }

if tmux_hal has-session -t hal9000 2>/dev/null; then
  exit 0
fi
status_pane=$(tmux_hal new-session -d -P -F '#{pane_id}' -s hal9000 -n dashboard -x 200 -y 50 \
  "watch -t -n 5 coordinator status")
tmux_hal split-window -h -t "$status_pane" "watch -t -n 2 coordinator list"
tmux_hal split-window -v -t "$status_pane" "watch -t -n 5 coordinator top"
tmux_hal select-pane -t "$status_pane"

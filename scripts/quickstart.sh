#!/usr/bin/env bash
# Command (a) of the README: set everything up on a fresh Debian host, then run site.yml.
#   --engine-only   stop after making sure a Docker Engine runs (what .ci/run uses)
# Extra arguments are passed to ansible-playbook (e.g. -e hal9000_home=/srv/hal9000).
source "$(dirname "$0")/lib.sh"

engine_only=false
if [ "${1:-}" = "--engine-only" ]; then
  engine_only=true
  shift
fi

ensure_venv
if $engine_only; then
  ensure_engine
  exit 0
fi
install_collection
log "ansible-playbook site.yml"
cd "$REPO_ROOT"
ansible-playbook site.yml "$@"

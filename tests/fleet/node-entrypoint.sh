#!/bin/sh
# sshd for Ansible, then dockerd, started again whenever it exits: the fault tests restart the engine alone
# (`pkill dockerd`, as a package upgrade does), with or without live-restore in /etc/docker/daemon.json.
# dockerd also listens on /run/node/docker.sock: the fixture bind-mounts a host directory there, so the
# controller's docker SDK reaches this engine without any network.
set -eu
ssh-keygen -A >/dev/null
/usr/sbin/sshd
trap 'kill -TERM "$engine" 2>/dev/null; wait "$engine"; exit 0' TERM INT
while :; do
  dockerd --host unix:///var/run/docker.sock --host unix:///run/node/docker.sock \
    --storage-driver overlay2 --log-level warn "$@" &
  engine=$!
  wait "$engine" || true
done

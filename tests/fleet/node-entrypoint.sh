#!/bin/sh
# sshd for Ansible, then dockerd, started again whenever it exits: the fault tests restart the engine alone
# (`pkill dockerd`, as a package upgrade does), with or without live-restore in /etc/docker/daemon.json.
# dockerd also listens on /run/node/docker.sock: the fixture bind-mounts a host directory there, so the
# controller's docker SDK reaches this engine without any network.
set -eu
# /run is not a tmpfs here, so a node killed and started again still has its last boot's pid files. dockerd 20.10
# refuses to start while its pid file names a live process, and the same PID now often belongs to sshd: start clean,
# as a host's boot does.
rm -rf /run/docker /run/docker.pid /run/docker.sock /run/containerd
ssh-keygen -A >/dev/null
/usr/sbin/sshd
trap 'kill -TERM "$engine" 2>/dev/null; wait "$engine"; exit 0' TERM INT
while :; do
  dockerd --host unix:///var/run/docker.sock --host unix:///run/node/docker.sock \
    --storage-driver overlay2 --log-level warn "$@" &
  engine=$!
  wait "$engine" || true
done

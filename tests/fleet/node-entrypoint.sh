#!/bin/sh
# sshd for Ansible, then dockerd in the foreground. dockerd also listens on /run/node/docker.sock: the fixture
# bind-mounts a host directory there, so the controller's docker SDK reaches this engine without any network.
set -eu
ssh-keygen -A >/dev/null
/usr/sbin/sshd
exec dockerd --host unix:///var/run/docker.sock --host unix:///run/node/docker.sock \
  --storage-driver overlay2 --log-level warn "$@"

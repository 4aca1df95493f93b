#!/bin/sh
# A swarm node of the stand-in cluster: Debian's dockerd as the container's main process. A node container
# killed and started again finds the pid files of its previous run; dockerd would take them for a running
# daemon (it is PID 1 both times), so they go first.
set -e
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
exec dockerd "$@"

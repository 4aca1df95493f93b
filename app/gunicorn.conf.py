"""gunicorn settings that depend on the container gunicorn runs in; the stack passes the rest as arguments.

Where gunicorn listens is set here rather than with --bind, because the socket's name is only known inside
the container.
"""
import os
import socket

# TCP: the network alias, the healthcheck and anything else on the network. PORT comes from app/Dockerfile.
bind = [f"0.0.0.0:{os.environ['PORT']}"]

# upstreamTransport unix: a socket file of this container's own (named after its hostname), never a shared
# name. During a release the old and the new container run side by side on one socket volume, and gunicorn
# unlinks its socket path when it exits: with one shared name, the old container's shutdown would delete the
# path the new one had just bound. nginx connects through a link that the release's cutover step points at
# this file once the container is healthy (infra/cutover.ts).
socket_dir = os.environ.get("GUNICORN_SOCKET_DIR")
if socket_dir:
    bind.append(f"unix:{socket_dir}/{socket.gethostname()}.sock")

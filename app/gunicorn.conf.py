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

# The scheme of the request nginx was reached by: gunicorn sets wsgi.url_scheme from X-Forwarded-Proto (so Flask
# builds https:// URLs behind nginx's TLS listener) only from peers it trusts. Those are forwarded_allow_ips
# (default 127.0.0.1: nobody on the network) and unix-socket peers, which here is nginx alone. Only the header
# nginx sets counts: the X-Forwarded-Ssl and X-Forwarded-Protocol gunicorn also reads by default would reach it
# from any client, as nginx passes them through.
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# metricsPort set: prometheus_client's multiprocess mode. Each worker writes its values to files in
# PROMETHEUS_MULTIPROC_DIR (main.py counts); the master sums them and serves them on APP_METRICS_PORT, inside the
# network only (nginx's metrics listener passes them to the host), with each gunicorn process's own figures.
metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
metrics_port = os.environ.get("APP_METRICS_PORT")
if metrics_dir and metrics_port:
    import shutil

    def on_starting(server):
        # A restarted container (or gunicorn) must not count its predecessor's requests twice.
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.makedirs(metrics_dir)

    def when_ready(server):
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
        from prometheus_client.metrics_core import Metric
        from prometheus_client.multiprocess import MultiProcessCollector

        class GunicornProcesses:
            """process_* figures (CPU, memory, open files) of the master and of each live worker, labelled."""

            def collect(self):
                families = {}
                for role, pid in [("master", os.getpid())] + [("worker", p) for p in list(server.WORKERS)]:
                    for family in ProcessCollector(namespace="gunicorn", pid=lambda pid=pid: pid, registry=None).collect():
                        merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                        for sample in family.samples:
                            merged.add_sample(sample.name, {**sample.labels, "role": role, "pid": str(pid)}, sample.value)
                return list(families.values())

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(GunicornProcesses())
        start_http_server(int(metrics_port), registry=registry)

    def child_exit(server, worker):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

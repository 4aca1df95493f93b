"""The tutorial's Flask app, plus a health endpoint for container healthchecks."""
import os
import socket

from flask import Flask, url_for
from flask.sessions import SecureCookieSessionInterface

app = Flask(__name__)


def secret_key():
    """Never hard-coded: the deployment passes it in, as a file (a swarm secret) or an env var.

    A random one per process is safe for this stateless app.
    """
    path = os.environ.get("FLASK_SECRET_KEY_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get("FLASK_SECRET_KEY") or os.urandom(32)


app.config["SECRET_KEY"] = secret_key()


class SessionInterface(SecureCookieSessionInterface):
    """Flask's cookie sessions, minus the work for requests that carry no cookie.

    Flask builds the cookie signer and parses the Cookie header on every request, even when there is no
    cookie; that was a quarter of Flask's time per request here. Without a Cookie header the session
    is the same empty one either way, so it is returned directly.
    """

    def open_session(self, app, request):
        if "HTTP_COOKIE" not in request.environ and app.secret_key:
            return self.session_class()
        return super().open_session(app, request)


app.session_interface = SessionInterface()
HOSTNAME = socket.gethostname()
VERSION = os.environ.get("APP_VERSION", "dev")


@app.route("/")
def index():
    return "Hello world!"


@app.route("/links")
def links():
    """Absolute URLs as Flask builds them: https:// behind nginx's TLS listener. gunicorn takes the scheme from
    nginx's X-Forwarded-Proto, trusted only on the unix socket nginx alone shares (gunicorn.conf.py)."""
    return {"index": url_for("index", _external=True)}


@app.route("/healthz")
def healthz():
    return {"status": "ok"}


@app.after_request
def served_by(response):
    # Which replica and release answered: lets tests and operators see load spreading and rollouts.
    response.headers["X-Served-By"] = HOSTNAME
    response.headers["X-App-Version"] = VERSION
    return response


def observe_requests(app):
    """Prometheus metrics of every request (prometheus_client's multiprocess mode, which the environment
    turns on): by route and status class, with the app's own time and the time since nginx handed the request
    on (its X-Request-Start), which includes the wait for a free worker. Served by gunicorn's master."""
    import time

    from flask import request
    from prometheus_client import Counter, Histogram

    # Sub-millisecond answers are the rule here; the defaults start at 5 ms.
    buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    requests = Counter("app_http_requests", "Requests the app answered, by route and status class.", ["route", "status_class"])
    app_time = Histogram("app_http_request_duration_seconds", "The app's time per request (healthchecks aside).", buckets=buckets)
    upstream_time = Histogram(
        "app_http_upstream_duration_seconds",
        "From nginx handing the request on to the app's answer: nginx's upstream time, queueing included.",
        buckets=buckets,
    )
    health_endpoint = "healthz"

    @app.before_request
    def started():
        request.environ["app.started"] = time.perf_counter()

    @app.after_request
    def observed(response):
        route = request.endpoint or "none"
        requests.labels(route, f"{response.status_code // 100}xx").inc()
        if route != health_endpoint:
            app_time.observe(time.perf_counter() - request.environ.get("app.started", time.perf_counter()))
            handed_on = request.headers.get("X-Request-Start", "")
            if handed_on.startswith("t="):
                try:
                    upstream_time.observe(max(0.0, time.time() - float(handed_on[2:])))
                except ValueError:
                    pass  # not nginx's: it sets this header on every request it passes
        return response


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    observe_requests(app)

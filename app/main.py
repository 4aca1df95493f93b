"""The tutorial's Flask app, plus a health endpoint for container healthchecks."""
import os
import socket

from flask import Flask
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


@app.route("/healthz")
def healthz():
    return {"status": "ok"}


@app.after_request
def served_by(response):
    # Which replica and release answered: lets tests and operators see load spreading and rollouts.
    response.headers["X-Served-By"] = HOSTNAME
    response.headers["X-App-Version"] = VERSION
    return response

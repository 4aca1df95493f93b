"""The tutorial's Flask app, plus a health endpoint for container healthchecks."""
import os
import socket

from flask import Flask

app = Flask(__name__)
# Never hard-coded: the deployment passes it in; a random one per process is safe for this stateless app.
app.config["SECRET_KEY"] = os.environ.get("FLASK_SECRET_KEY") or os.urandom(32)
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

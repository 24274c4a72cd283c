"""hubwatch's lab: a real JupyterHub 6 on 127.0.0.1 with configurable-http-proxy, local single-user servers
and Dask Gateway as a hub-managed service, plus fault flags (labflags.py). Started by lab.sh."""

import asyncio
import inspect
import itertools
import os
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.handlers.login import LoginHandler
from jupyterhub.spawner import SimpleLocalProcessSpawner
from jupyterhub.utils import maybe_future
from tornado import web

LAB = Path(__file__).resolve().parent
sys.path.insert(0, str(LAB))
import labfork  # noqa: E402
from labflags import flag, seconds  # noqa: E402

c = get_config()  # noqa: F821

LAB_DIR = Path(os.environ["LAB_DIR"])
PORT = int(os.environ["HUB_PORT"])
VENV_BIN = Path(sys.executable).parent
NODE_BIN = Path(os.environ["LAB_NODE_BIN"])
# The hub's users (LAB_USERS, not PROBE_USERS: a sourced lab.env must not change a later lab's users).
USERS = os.environ.get("LAB_USERS", "probe-1 probe-2 probe-3 probe-4").split()
PASSWORD = os.environ.get("PROBE_PASSWORD", "probe-password")
HUBWATCH_TOKEN = os.environ.get("HUBWATCH_TOKEN", "hubwatch-0123456789abcdef0123456789abcdef")
# The first-login check's own service: it creates and deletes users, so it holds a token of its own.
FIRST_LOGIN_TOKEN = "hubwatch-first-login-" + HUBWATCH_TOKEN[-16:]
# Every process of this lab carries the tag, so lab.sh stop finds them all (servers start new sessions).
TAG = {"HUBWATCH_LAB_ID": str(LAB_DIR), "LAB_DIR": str(LAB_DIR)}

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = PORT
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = PORT + 1
c.JupyterHub.db_url = f"sqlite:///{LAB_DIR}/state/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = str(LAB_DIR / "state" / "cookie_secret")
c.JupyterHub.pid_file = str(LAB_DIR / "state" / "hub.pid")
c.JupyterHub.cleanup_servers = True
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": int(os.environ.get("SLOW_SPAWN_TIMEOUT", "10"))}
c.JupyterHub.last_activity_interval = 3600
# The benchmarks read the hub's own spawn and stop durations from /hub/metrics.
c.JupyterHub.authenticate_prometheus = False

c.ConfigurableHTTPProxy.command = [str(NODE_BIN / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PORT + 2}"
c.ConfigurableHTTPProxy.pid_file = str(LAB_DIR / "state" / "proxy.pid")
c.ConfigurableHTTPProxy.auth_token = "lab-proxy-" + HUBWATCH_TOKEN[-16:]


# The spawn-limit flag (content: a number) is the hub's concurrent_spawn_limit while it is on: the hub's own
# throttle then answers further starts 429 "Too many users trying to log in right now" and logs them.
_configured_spawn_limit = BaseHandler.concurrent_spawn_limit
BaseHandler.concurrent_spawn_limit = property(lambda self: int(flag("spawn-limit") or 0) or _configured_spawn_limit.fget(self))


class FlaggedLoginHandler(LoginHandler):
    """The login page honours login-slow and login-500 (global flags: the page has no user yet)."""

    async def get(self):
        slow = seconds("login-slow")
        if slow:
            await asyncio.sleep(slow)
        if flag("login-500"):
            raise web.HTTPError(500, "injected login failure (flag login-500)")
        result = super().get()
        if inspect.isawaitable(result):
            await result


class FlaggedAuthenticator(SharedPasswordAuthenticator):
    """Password checks honour login-slow, login-500 and login-403, per user or for everyone."""

    async def authenticate(self, handler, data):
        user = (data or {}).get("username")
        slow = seconds("login-slow", user)
        if slow:
            await asyncio.sleep(slow)
        if flag("login-500", user):
            raise RuntimeError("injected login failure (flag login-500)")
        if flag("login-403", user):
            return None
        return await super().authenticate(handler, data)

    async def add_user(self, user):
        """add-user-fail (its content the error): creating a user the hub did not have fails in the
        authenticator, as LocalAuthenticator's useradd or a hook that provisions new users can. JupyterHub calls
        this for a first login and for a user made through the REST API alike; users it already has are not
        refused (it calls this for every user at start-up too)."""
        failure = flag("add-user-fail")
        if failure is not None and user.name not in USERS:
            message = "injected user-creation failure (flag add-user-fail)" if failure == "1" else failure
            raise RuntimeError(message)
        return await maybe_future(super().add_user(user))

    def get_handlers(self, app):
        return [("/login", FlaggedLoginHandler)]


c.JupyterHub.authenticator_class = FlaggedAuthenticator
c.SharedPasswordAuthenticator.user_password = PASSWORD
c.Authenticator.allowed_users = set(USERS)


# Single-user servers listen on ports of a range of this lab's own, below Linux's ephemeral ports
# (32768-60999): JupyterHub's default, a random free port, is free when chosen, but the server binds it seconds
# later, and on a machine running many labs and tests another process's bind(0) can take it first ("The port
# 42363 is already in use": the spawn fails after SPAWN_HTTP_TIMEOUT). 60 ports a lab, labs 10 ports apart
# never share one; a port still held (a running server, a closing socket) is skipped.
SERVER_PORTS = range(20000 + PORT % 2000 * 6, 20000 + PORT % 2000 * 6 + 60)
_server_port_turn = itertools.count()


def server_port():
    for _ in SERVER_PORTS:
        port = SERVER_PORTS[next(_server_port_turn) % len(SERVER_PORTS)]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port for a server in {SERVER_PORTS}")


class LabFork:
    """Starts the lab's fork server (labfork.py) at the first spawn, and again if it died; its output goes to
    the hub's log, as a Popen'd server's would."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process = None

    def fork(self, argv, env, cwd):
        """A forked server's pid. Blocking: called in a thread."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = subprocess.Popen(
                    [sys.executable, str(LAB / "labfork.py")],
                    stdin=subprocess.PIPE,  # its end is the hub's
                    env={**TAG, "PATH": f"{VENV_BIN}:/usr/bin:/bin", "PYTHONPATH": str(LAB), "HOME": str(LAB_DIR)},
                )
        return labfork.fork(argv, env, cwd)


LAB_FORK = LabFork()


class FlaggedSpawner(SimpleLocalProcessSpawner):
    """Local single-user servers that honour spawn-slow, spawn-hang, spawn-fail and spawn-crash for their
    user."""

    async def start(self):
        self.port = server_port()
        user = self.user.name
        slow = seconds("spawn-slow", user)
        if slow:
            await asyncio.sleep(slow)
        if flag("new-home-fail") and not Path(self.home_dir).exists():
            # A brand-new user whose home cannot be made (a storage provisioner failing, a quota on the
            # parent): only a user who never started a server meets it.
            raise PermissionError(13, "Permission denied", self.home_dir)
        if flag("spawn-hang", user):
            # A spawner that stopped hearing from the cluster: no progress, no failure, until the hub's
            # start_timeout ends it or a stop interrupts it.
            await asyncio.Event().wait()
        if flag("spawn-fail", user):
            raise RuntimeError("injected spawn failure (flag spawn-fail)")
        profile = self.user_options.get("profile") if isinstance(self.user_options, dict) else None
        if profile and flag("profile-fail") == profile:
            raise RuntimeError(f"injected failure of profile {profile} (flag profile-fail)")
        if flag("spawn-crash", user):
            self.cmd = [sys.executable, "-c", "import sys; sys.exit(3)"]
            return await super().start()
        # LocalProcessSpawner.start, with the server forked by labfork.py instead of exec'd.
        argv = [str(VENV_BIN / "jupyterhub-singleuser"), *self.get_args()]
        self.log.info("Spawning (forked by labfork.py) %s", shlex.join(argv))
        self.proc = None
        self.pid = await asyncio.to_thread(LAB_FORK.fork, argv, self.get_env(), self.home_dir)
        return (self.ip or "127.0.0.1", self.port)


c.JupyterHub.spawner_class = FlaggedSpawner
c.Spawner.ip = "127.0.0.1"
# Writes honour home-full and home-readonly (labcontents.py).
c.Spawner.args = ["--allow-root", "--ServerApp.contents_manager_class=labcontents.FlaggedContentsManager"]
c.Spawner.start_timeout = int(os.environ.get("SPAWN_TIMEOUT", "60"))
c.Spawner.http_timeout = int(os.environ.get("SPAWN_HTTP_TIMEOUT", "30"))
c.Spawner.poll_interval = int(os.environ.get("SPAWN_POLL_INTERVAL", "5"))
c.Spawner.environment = {
    **TAG,
    "JUPYTER_PATH": str(LAB_DIR / "share" / "jupyter"),
    "PATH": f"{VENV_BIN}:/usr/bin:/bin",
    "PYTHONPATH": str(LAB),
    # Runtime files outside the home directory, as many images keep them: a full home then fails saving, not
    # the server's start (the outage users actually meet).
    "JUPYTER_RUNTIME_DIR": lambda spawner: str(LAB_DIR / "runtime" / spawner.user.name),
    # What daskhub sets in every user server, so that users' `Gateway()` finds the gateway. With the
    # dask-no-route flag (read at spawn) the scheduler proxy address leads nowhere, as when a NetworkPolicy
    # blocks user servers from it: the gateway's HTTP API answers, a client never reaches its scheduler.
    "DASK_GATEWAY__ADDRESS": f"http://127.0.0.1:{PORT}/services/dask-gateway",
    "DASK_GATEWAY__PROXY_ADDRESS": lambda spawner: (
        f"gateway://127.0.0.1:{PORT + 9}" if flag("dask-no-route", spawner.user.name) else f"gateway://127.0.0.1:{PORT + 5}"
    ),
    "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
}
# Users' servers may use the gateway as users (daskhub does the same): their token carries the access scope
# the gateway's JupyterHub authenticator checks.
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", "access:services!service=dask-gateway"]
c.SimpleLocalProcessSpawner.home_dir_template = str(LAB_DIR / "home" / "{username}")

c.JupyterHub.services = [
    {"name": "hubwatch", "api_token": HUBWATCH_TOKEN},
    {"name": "hubwatch-first-login", "api_token": FIRST_LOGIN_TOKEN},
    {
        "name": "dask-gateway",
        "url": f"http://127.0.0.1:{PORT + 3}",
        "command": [str(VENV_BIN / "dask-gateway-server"), "-f", str(LAB / "dask_gateway_config.py")],
        "environment": {**TAG, "HUB_PORT": str(PORT), "PATH": f"{VENV_BIN}:/usr/bin:/bin"},
    },
]
# The group is only informative: never filter access:servers by group (the single-user server cannot resolve it).
c.JupyterHub.load_groups = {"probes": {"users": USERS}}
# hubwatch's minimal role: spawn, stop and watch the probe users' servers, use them (kernels), mint their tokens.
scopes = [f"{s}!user={u}" for u in USERS for s in ("servers", "access:servers", "tokens")]
c.JupyterHub.load_roles = [
    {"name": "hubwatch", "scopes": scopes + ["access:services!service=dask-gateway"], "services": ["hubwatch"]},
    {"name": "user", "scopes": ["self", "access:services!service=dask-gateway"]},
    # The first-login check: make a user, start, use and stop their server, delete them (names are random).
    {"name": "hubwatch-first-login", "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"],
     "services": ["hubwatch-first-login"]},
]

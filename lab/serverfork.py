"""The lab's single-user servers start from here: a process that imports jupyter-server and JupyterHub's
single-user extension once, then forks a server for each spawn (the hub's FlaggedSpawner asks it). Each
server runs the same code `jupyterhub-singleuser` would; only the 1.2 s of CPU its imports cost every start
is saved (about a fifth of the whole test suite's CPU on two cores, where the lab's tests are bound by CPU).

Protocol, one JSON line each way: the hub writes {"argv", "env", "cwd"} on stdin, this answers {"pid"} (or
{"error"}) on stdout. A forked server leads its own session, as a Popen(start_new_session=True) server does,
and is reaped here the moment it exits (the hub polls it by pid, and a zombie would look alive). While it
runs, $LAB_DIR/state/servers/<pid> holds its user's name: its /proc/PID/environ is this process's (fork does
not replace it), so the tests' Lab::kill_server finds it there rather than by JUPYTERHUB_USER."""

import json
import os
import signal
import sys
from pathlib import Path

# What every server imports at its start, done once. Nothing here starts a thread or an event loop (a fork
# copies only the calling thread).
import jupyter_client.manager  # noqa: F401
import jupyter_server.serverapp  # noqa: F401
import jupyter_server.services.kernels.kernelmanager  # noqa: F401
import jupyter_server_terminals  # noqa: F401
import jupyterhub.singleuser.extension  # noqa: F401
import labcontents  # noqa: F401

SERVERS = Path(os.environ["LAB_DIR"]) / "state" / "servers"


def reap(_signum=None, _frame=None):
    """Collects every server that exited and forgets its record."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        (SERVERS / str(pid)).unlink(missing_ok=True)


def serve(request):
    """In the forked child: becomes the server jupyterhub-singleuser would have started, and never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the hub's log, where a Popen'd server's output goes
    os.close(devnull)
    os.environ.clear()
    os.environ.update(request["env"])
    try:
        # What SimpleLocalProcessSpawner's preexec_fn does.
        os.makedirs(request["cwd"], 0o755, exist_ok=True)
        os.chdir(request["cwd"])
    except OSError as e:
        print(f"serverfork: cannot enter {request['cwd']}: {e}", file=sys.stderr)
    sys.argv = request["argv"]
    from jupyterhub.singleuser import main

    sys.exit(main())


def main():
    SERVERS.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGCHLD, reap)
    for line in sys.stdin:
        request = json.loads(line)
        # A server that exits at once is reaped only after its record is written, or the record would stay.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            print(json.dumps({"error": str(e)}), flush=True)
            continue
        if pid == 0:
            serve(request)
        (SERVERS / str(pid)).write_text(request["env"].get("JUPYTERHUB_USER", ""))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    main()

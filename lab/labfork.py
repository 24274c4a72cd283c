"""The lab's fork server: single-user servers and kernels start from here rather than from a new interpreter.

It imports jupyter-server, JupyterHub's single-user extension and ipykernel once, then forks a process for
each start and runs in it the very script an exec would have run (`jupyterhub-singleuser`, or the kernelspec's
`kernel_launcher.py`), with the caller's argv, environment and working directory, in a session of its own (as
`Popen(start_new_session=True)` does). Only the imports' CPU is saved: 1.2 s of a server's 2 s, about 0.4 s of
a kernel's — on two cores the lab's tests are bound by CPU, and these starts were most of it.

Started by the hub at its first spawn (jupyterhub_config.py), its output in the hub's log; it ends when the hub
does (the hub holds its stdin). Callers (the hub's spawner, the servers' kernel provisioner in labkernels.py)
connect to $LAB_DIR/state/labfork.sock, write one JSON line {"argv", "env", "cwd"} and read one back: {"pid"}
or {"error"}. A forked process is this process's child: it is reaped here the moment it exits (the callers
watch it by pid, and a zombie would look alive), its exit status written first to state/exits/<pid>. While it
runs, state/forked/<pid> holds its user's name: its /proc/PID/environ is this process's (fork does not replace
it), so the tests' Lab::kill_server finds it there.
"""

import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import time
from pathlib import Path

STATE = Path(os.environ["LAB_DIR"]) / "state"
SOCKET = STATE / "labfork.sock"
FORKED = STATE / "forked"
EXITS = STATE / "exits"


def fork(argv, env, cwd, wait=30.0):
    """The caller's end: asks the fork server for a process; its pid. Blocking (the hub calls it in a thread)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as connection:
                connection.settimeout(60)  # the fork server's imports, on a busy machine
                connection.connect(str(SOCKET))
                connection.sendall((json.dumps({"argv": argv, "env": env, "cwd": cwd}) + "\n").encode())
                with connection.makefile() as lines:
                    reply = lines.readline()
            break
        except (FileNotFoundError, ConnectionRefusedError):
            # Not listening yet (the hub starts it at its first spawn).
            if time.monotonic() > deadline:
                raise RuntimeError(f"the lab's fork server is not listening on {SOCKET}") from None
            time.sleep(0.05)
    if not reply:
        raise RuntimeError("the lab's fork server closed the connection (see the hub's log)")
    reply = json.loads(reply)
    if "error" in reply:
        raise OSError(reply["error"])
    return reply["pid"]


def exit_status(pid):
    """A forked process's exit status as Popen.returncode gives it (negative: the signal), once it is reaped."""
    try:
        return int((EXITS / str(pid)).read_text())
    except (FileNotFoundError, ValueError):
        return None


def reap(_signum=None, _frame=None):
    """Records and collects every forked process that exited."""
    while True:
        try:
            # Looked at before it is collected, so that its status is on record before its pid is gone.
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
        (EXITS / str(info.si_pid)).write_text(str(-info.si_status if killed else info.si_status))
        os.waitpid(info.si_pid, 0)
        (FORKED / str(info.si_pid)).unlink(missing_ok=True)


def exit_without(server):
    """A kernel's end when its server is gone. ipykernel does this itself by watching its parent change, but a
    forked kernel's parent is this fork server, so it watches the server's pid instead."""
    while True:
        time.sleep(1)
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            os._exit(1)


def run(request):
    """In the forked child: becomes the process an exec of argv would have started, and never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the hub's log, where a Popen'd server's or kernel's output goes
    os.close(devnull)
    os.environ.clear()
    os.environ.update(request["env"])
    try:
        os.makedirs(request["cwd"], 0o755, exist_ok=True)  # what SimpleLocalProcessSpawner's preexec_fn does
        os.chdir(request["cwd"])
    except OSError as e:
        print(f"labfork: cannot enter {request['cwd']}: {e}", file=sys.stderr)
    parent = request["env"].get("JPY_PARENT_PID")
    if parent:
        threading.Thread(target=exit_without, args=(int(parent),), daemon=True).start()
    argv = request["argv"]
    if Path(argv[0]).name.startswith("python"):
        argv = argv[1:]  # a kernelspec's `python kernel_launcher.py …`: the interpreter is this one
    sys.argv = list(argv)
    sys.path[0] = str(Path(argv[0]).resolve().parent)
    runpy.run_path(argv[0], run_name="__main__")
    sys.exit(0)


def serve(listener, connection):
    """Answers one caller: forks what it asks for."""
    request = b""
    while not request.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            return
        request += chunk
    request = json.loads(request)
    # A process that exits at once is reaped only after its record is written, or the record would stay.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pid = os.fork()
    except OSError as e:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        connection.sendall((json.dumps({"error": str(e)}) + "\n").encode())
        return
    if pid == 0:
        listener.close()
        connection.close()
        run(request)
    (FORKED / str(pid)).write_text(request["env"].get("JUPYTERHUB_USER", ""))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    connection.sendall((json.dumps({"pid": pid}) + "\n").encode())


def main():
    for directory in (FORKED, EXITS):
        directory.mkdir(parents=True, exist_ok=True)
    SOCKET.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    # Listening before the imports: a caller waits in the backlog, not in a retry loop.
    listener.bind(str(SOCKET))
    listener.listen(64)
    # What every server and kernel imports at its start, done once. None of it starts a thread or an event
    # loop (a fork copies only the calling thread), nor imports dask (its configuration is read from the
    # environment at import, which is the forked process's own only after the fork).
    import ipykernel.kernelapp  # noqa: F401
    import jupyter_client.manager  # noqa: F401
    import jupyter_server.serverapp  # noqa: F401
    import jupyter_server.services.kernels.kernelmanager  # noqa: F401
    import jupyter_server_terminals  # noqa: F401
    import jupyterhub.singleuser.extension  # noqa: F401
    import labcontents  # noqa: F401

    signal.signal(signal.SIGCHLD, reap)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    # The hub holds the other end of stdin: at its end (a stop, a crash) this ends too, as its servers do.
    events.register(sys.stdin, selectors.EVENT_READ)
    while True:
        for key, _ in events.select():
            if key.fileobj is sys.stdin:
                if not os.read(sys.stdin.fileno(), 4096):
                    return
                continue
            connection, _ = listener.accept()
            with connection:
                serve(listener, connection)


if __name__ == "__main__":
    main()

"""The lab's kernel provisioner: jupyter_client's LocalProvisioner, except that the kernel is forked by the
lab's fork server (labfork.py) instead of exec'd — the kernelspec's own `kernel_launcher.py`, with the argv,
environment and directory jupyter-server gives it. The kernelspecs name it (lab.sh); it is registered by
`lab_kernels-1.0.dist-info` beside this file, which PYTHONPATH puts on the servers' path.

The provisioner watches the kernel as LocalProvisioner watches its Popen: signals go to the kernel's process
group (it leads its own session), and its exit status is the fork server's record of it."""

import asyncio
import os
import signal
import time

import labfork
from jupyter_client.provisioning import LocalProvisioner


class ForkedKernel:
    """What LocalProvisioner uses of a Popen, for a process that is not this one's child."""

    stdin = stdout = stderr = None

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
                return None
            except ProcessLookupError:
                status = labfork.exit_status(self.pid)
                self.returncode = 0 if status is None else status
        return self.returncode

    def wait(self):
        # LocalProvisioner calls it only once poll() has seen the kernel gone.
        while self.poll() is None:
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum):
        os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)


class ForkedProvisioner(LocalProvisioner):
    async def launch_kernel(self, cmd, **kwargs):
        # What jupyter_client's launch_kernel adds on POSIX; the ~ it expands.
        env = {**(kwargs.get("env") or os.environ), "JPY_PARENT_PID": str(os.getpid())}
        cmd = [os.path.expanduser(part) for part in cmd]
        cwd = str(kwargs.get("cwd") or os.getcwd())
        pid = await asyncio.to_thread(labfork.fork, cmd, env, cwd)
        self.process = ForkedKernel(pid)
        self.pid = self.pgid = pid
        self.cwd = cwd
        return self.connection_info

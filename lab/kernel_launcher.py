"""The lab's kernels: python3 honours the kernel-crash and kernel-hang flags of the server's user
($JUPYTERHUB_USER), then starts ipykernel as usual; the `crash` and `hang` kernelspecs pass --lab-fault to
always crash or hang."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labflags import flag  # noqa: E402

fault = None
for arg in list(sys.argv[1:]):
    if arg.startswith("--lab-fault="):
        fault = arg.split("=", 1)[1]
        sys.argv.remove(arg)

user = os.environ.get("JUPYTERHUB_USER")
if fault == "crash" or flag("kernel-crash", user):
    # The process exits at once, before it opens any socket: the server's restarter tries again and gives up.
    sys.exit(1)
if fault == "hang" or flag("kernel-hang", user):
    # The process lives but never binds its ports or answers: the server waits for a kernel_info_reply.
    while True:
        time.sleep(3600)

from ipykernel import kernelapp  # noqa: E402

kernelapp.launch_new_instance()

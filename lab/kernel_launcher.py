"""The lab's python3 kernel: honours the kernel-crash and kernel-hang flags of the server's user, else
starts ipykernel as usual."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labflags import flag  # noqa: E402

user = os.environ.get("JUPYTERHUB_USER")
if flag("kernel-crash", user):
    sys.exit(1)
if flag("kernel-hang", user):
    while True:
        time.sleep(3600)

from ipykernel import kernelapp  # noqa: E402

kernelapp.launch_new_instance()

"""Dask Gateway for hubwatch's lab, run by the hub as a managed service; honours the dask-fail flag."""

import os
import sys
from pathlib import Path

from dask_gateway_server.backends.local import UnsafeLocalBackend

LAB = Path(__file__).resolve().parent
sys.path.insert(0, str(LAB))
from labflags import flag  # noqa: E402

c = get_config()  # noqa: F821
PORT = int(os.environ["HUB_PORT"])
VENV_BIN = Path(sys.executable).parent


class FlaggedBackend(UnsafeLocalBackend):
    """Runs schedulers and workers as the gateway's own user (no Unix accounts needed). With the dask-fail
    flag (global, or flags/<owner>/dask-fail where the owner is the user name or `service:hubwatch`) a new
    cluster goes FAILED at once."""

    async def do_start_cluster(self, cluster):
        if flag("dask-fail", cluster.username):
            raise RuntimeError("injected cluster failure (flag dask-fail)")
        async for state in super().do_start_cluster(cluster):
            yield state


c.DaskGateway.address = f"127.0.0.1:{PORT + 4}"
c.Proxy.address = f"127.0.0.1:{PORT + 3}"
c.Proxy.tcp_address = f"127.0.0.1:{PORT + 5}"
c.Proxy.prefix = "/services/dask-gateway"
c.DaskGateway.backend_class = FlaggedBackend
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
c.ClusterConfig.scheduler_cmd = [str(VENV_BIN / "dask"), "scheduler"]
# No nanny: a nanny is one more Python process that imports distributed again for each worker (about 0.9 s of
# CPU), and restarting workers is not what the lab's tests look at.
c.ClusterConfig.worker_cmd = [str(VENV_BIN / "dask"), "worker", "--host", "127.0.0.1", "--no-nanny"]
c.ClusterConfig.cluster_max_workers = 2
LAB_DIR = Path(os.environ["LAB_DIR"])
# The tag lets lab.sh stop find schedulers and workers (they start new sessions); scratch space stays in the lab.
c.ClusterConfig.environment = {
    "HUBWATCH_LAB_ID": os.environ["HUBWATCH_LAB_ID"],
    "LAB_DIR": str(LAB_DIR),
    "DASK_TEMPORARY_DIRECTORY": str(LAB_DIR / "dask-scratch"),
}
c.LocalBackend.clusters_directory = str(LAB_DIR / "dask-clusters")

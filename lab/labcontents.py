"""The lab's single-user servers' contents manager: the default one, except that it honours the flags
home-full and home-readonly (for the server's user, or everyone). A flagged write fails with the OSError a full
or read-only disk raises, at the point a real write fails, so jupyter-server answers exactly as it would:
HTTP 500 "Unexpected error while saving file: NAME [Errno 28] No space left on device: '/path'"."""

import errno
import os

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from labflags import flag


class FlaggedContentsManager(AsyncLargeFileManager):
    async def _save_file(self, os_path, content, format):
        user = os.environ.get("JUPYTERHUB_USER")
        for name, code in (("home-full", errno.ENOSPC), ("home-readonly", errno.EROFS)):
            if flag(name, user):
                raise OSError(code, os.strerror(code), os_path)
        return await super()._save_file(os_path, content, format)

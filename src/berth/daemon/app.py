"""The daemon object: settings, metadata, events and the services, wired to the API."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from berth.daemon.config import DaemonConfig
from berth.daemon.db import MetadataDB
from berth.daemon.events import EventBus
from berth.daemon.http import serve_connection
from berth.daemon.router import API_VERSION, Router


class Daemon:
    """Services register themselves here by name (``daemon.services["containers"]``) in
    ``build_services``; API modules register their routes in ``build_router``."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.started = time.time()
        for path in (config.data_root, config.exec_root, config.content_root, config.containers_root,
                     config.shims_root, config.runtime_root, config.volumes_root):
            os.makedirs(path, mode=0o711, exist_ok=True)
        self.db = MetadataDB(config.metadata_path)
        self.events = EventBus()
        self.services: dict[str, object] = {}
        self.router = Router()
        self.server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()
        self.server_headers = {"Api-Version": API_VERSION, "Docker-Experimental": "false", "Ostype": "linux",
                               "Server": f"Berth/{_version()} (linux)"}

    def build(self) -> None:
        from berth.daemon import services

        services.build_services(self)
        from berth.daemon import api

        api.build_router(self)

    async def serve(self) -> None:
        path = self.config.socket_path
        for name, service in self.services.items():  # before serving: restored state is what clients see
            start = getattr(service, "start", None)
            if start is not None:
                await start()
        if os.path.exists(path):
            os.unlink(path)
        old_umask = os.umask(0o777 & ~self.config.socket_mode)  # never reachable with wider modes
        try:
            self.server = await asyncio.start_unix_server(self._connection, path=path, limit=1 << 20)
        finally:
            os.umask(old_umask)
        os.chmod(path, self.config.socket_mode)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await serve_connection(self.router.dispatch, reader, writer, self.server_headers, self._log_error)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)

    def _log_error(self, exc: BaseException) -> None:
        import traceback

        sys.stderr.write("berthd: internal error:\n" + "".join(traceback.format_exception(exc)))

    async def close(self) -> None:
        """Stop serving; containers keep running under their shims."""
        for service in self.services.values():
            stop = getattr(service, "stop", None)
            if stop is not None:
                await stop()
        if self.server is not None:
            self.server.close()
            for task in list(self._connections):  # attached clients, followed logs, events
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self.server.wait_closed()
        if os.path.exists(self.config.socket_path):
            os.unlink(self.config.socket_path)
        self.db.close()


def _version() -> str:
    from berth import __version__

    return __version__

"""The containers service: records, lifecycle, one ``berth-shim`` per running container.

    build(daemon) -> ContainersService

    create(body, name) -> (id, warnings)          start_container(ref)
    stop_container(ref, timeout, signal)          kill(ref, signal)      restart(ref, timeout, signal)
    pause(ref)   unpause(ref)   rename(ref, name)   remove(ref, force, volumes)
    await wait(ref, condition) -> future of the exit code (registered at once: a later start is seen)
    update(ref, body) -> warnings   resize(ref, h, w)   top(ref, ps_args) -> {Titles, Processes}
    stats(ref, stream, one_shot) -> async iterator of Docker's stats dicts
    logs(ref, follow=, stdout=, stderr=, since=, until=, tail=, timestamps=) -> (tty, async (stream, bytes))
    attach(ref, stdin, stdout, stderr) -> (record, awaitable of the shim stream (reader, writer));
        before a start it completes at the start, so no output is missed
    exec_create(ref, body) -> id    exec_start(id, detach, tty) -> (exec, stream | None)
    exec_wait(id) -> exit code      exec_inspect(id) -> dict    exec_resize(id, h, w)
    inspect(ref, size) -> dict      summaries(all_, size, filters, limit) -> [dict]   counts() -> dict
    get(ref) -> (id, record)        users_of_image(image_id) -> [ids] (the images service's in-use checker)
    start() / stop()                the daemon's hooks: restore after a restart / stop watching

Errors: ``NotFound`` (404, "No such container: x", "No such image: x"), ``AlreadyExists``
(409, the name conflict), ``Conflict`` (409: running, paused, not running), ``InvalidArgument``
(400), ``NotModified`` (304: already started / stopped), ``ServerError`` (500).

On disk (DESIGN.md)::

    <data_root>/containers/<id>/bundle/config.json   the OCI spec, written at each start
    <data_root>/containers/<id>/bundle/rootfs        the overlay of the image snapshot
                                                     (mounted at start, unmounted after exit)
    <data_root>/containers/<id>/<id>-json.log        the shim's json-file log (+ .1, .2 ...)
    <data_root>/containers/<id>/{hostname,hosts,resolv.conf}   bind-mounted into /etc
    <exec_root>/shims/<id>/                           the shim's state dir (socket, exit.json)
    <exec_root>/runtime/                              the runtime's --root

The record (metadata DB, kind ``container``) is Docker's inspect document plus a few
private fields (``SnapshotKey``, ``ManuallyStopped``, ``Generation``). A container runs
under its own shim, started detached: stopping berthd stops no container. A start makes
a new shim; once the container's init has exited (and its output ended) the daemon
records the exit, deletes the shim, and unmounts the root filesystem.

Restoring after a daemon restart (``start``): every container recorded as running is
matched with its shim (``find_shims``). A live shim whose container still runs is
watched again; one whose container exited while berthd was down answers with the exit
code (``exit.json``), which is recorded as if berthd had seen it (a ``die`` event).
A container whose shim is gone without an exit record is killed through the runtime
(``kill``/``delete --force``, so no process is left without its supervisor) and marked
exited with code **255** and ``State.Error`` "berth-shim … is gone", as dockerd reports a
container whose task it could not find again. Then restart policies apply, as dockerd
does at start-up: ``always`` containers are started, ``unless-stopped`` ones unless they
were stopped by hand.

Restart policies use Docker's back-off: 100 ms before the first restart, doubled each
time up to one minute, back to 100 ms after a run of at least 10 s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

from berth import errors
from berth._sys.files import atomic_write
from berth.daemon import mountspec, shimio, specgen
from berth.daemon.services import _containers_util as util
from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.shim.protocol import rfc3339nano

KIND = "container"
ZERO_TIME = "0001-01-01T00:00:00Z"
LOST_EXIT_CODE = 255
DEFAULT_STOP_TIMEOUT = 10
RESTART_MIN, RESTART_MAX, RESTART_RESET_AFTER = 0.1, 60.0, 10.0
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class NotModified(errors.BerthError):
    """Already in the asked state (HTTP 304, as dockerd answers start/stop)."""

    http_status = 304


class Conflict(FailedPrecondition):
    pass


class ServerError(errors.BerthError):
    http_status = 500


class LogsNotSupported(errors.BerthError):
    """``docker logs`` of a container with the ``none`` log driver (501, as dockerd)."""

    http_status = 501


def build(daemon) -> ContainersService:  # noqa: ANN001 - berth.daemon.app.Daemon
    return ContainersService(daemon)


# --- images: through the images service ----------------------------------------------------


class _Images:
    """What containers need of the images service (``daemon.services["images"]``):
    ``resolve(name)`` -> {"id", "config", "chain_id", "size"}, and the snapshotter."""

    def __init__(self, daemon) -> None:  # noqa: ANN001
        self.daemon = daemon

    @property
    def service(self) -> Any:
        return self.daemon.services["images"]  # built before the API serves

    @property
    def snapshotter(self) -> Any:
        return self.service.snapshotter

    def resolve(self, name: str) -> dict:
        """NotFound with Docker's "No such image: NAME"."""
        svc = self.service
        image = svc.resolve(name)
        return {"id": image.id, "config": dict(image.config or {}), "chain_id": svc.snapshot_parent(image),
                "size": int(getattr(image.record, "size", 0) or 0)}


# --- the service ---------------------------------------------------------------------------


class ContainersService:
    def __init__(self, daemon) -> None:  # noqa: ANN001
        self.daemon = daemon
        self.config = daemon.config
        self.db = daemon.db
        self.events = daemon.events
        self.images = _Images(daemon)
        self._records: dict[str, dict] = {rid: rec for rid, rec in self.db.all(KIND)}
        self._locks: dict[str, asyncio.Lock] = {}
        self._exit_waiters: dict[str, list[asyncio.Future]] = {}
        self._removed_waiters: dict[str, list[asyncio.Future]] = {}
        self._pending_attach: dict[str, list[tuple[dict, asyncio.Future]]] = {}
        self._monitors: dict[str, asyncio.Task] = {}
        self._restart_tasks: dict[str, asyncio.Task] = {}
        self._backoff: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._execs: dict[str, dict] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="containers")
        self._closing = False
        self._removing: set[str] = set()
        daemon.services["images"].set_in_use_checker(self.users_of_image)
        daemon.services["volumes"].set_users_checker(self.users_of_volume, self.running_users_of_volume)

    # --- paths ---------------------------------------------------------------------------

    def dir(self, cid: str) -> str:
        return os.path.join(self.config.containers_root, cid)

    def bundle(self, cid: str) -> str:
        return os.path.join(self.dir(cid), "bundle")

    def rootfs(self, cid: str) -> str:
        return os.path.join(self.bundle(cid), "rootfs")

    def shim_dir(self, cid: str) -> str:
        return os.path.join(self.config.shims_root, cid)

    def log_path(self, cid: str) -> str:
        return os.path.join(self.dir(cid), f"{cid}-json.log")

    # --- records -----------------------------------------------------------------------------

    def get(self, ref: str) -> tuple[str, dict]:
        """By full id, name (with or without '/'), or unique id prefix."""
        if ref in self._records:
            return ref, self._records[ref]
        name = ref[1:] if ref.startswith("/") else ref
        for cid, rec in self._records.items():
            if rec["Name"] == "/" + name:
                return cid, rec
        if ref and re.fullmatch(r"[0-9a-f]+", ref):
            found = [cid for cid in self._records if cid.startswith(ref)]
            if len(found) == 1:
                return found[0], self._records[found[0]]
            if len(found) > 1:
                raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def _save(self, rec: dict) -> None:
        self._records[rec["Id"]] = rec
        self.db.put(KIND, rec["Id"], rec, name=rec["Name"][1:])

    def _lock(self, cid: str) -> asyncio.Lock:
        lock = self._locks.get(cid)
        if lock is None:
            lock = self._locks[cid] = asyncio.Lock()
        return lock

    def _attrs(self, rec: dict, **extra: Any) -> dict[str, str]:
        attrs = {str(k): str(v) for k, v in (rec["Config"].get("Labels") or {}).items()}
        attrs.update(image=rec["Config"].get("Image") or "", name=rec["Name"][1:])
        attrs.update({k: str(v) for k, v in extra.items()})
        return attrs

    def _event(self, rec: dict, action: str, **extra: Any) -> None:
        self.events.publish("container", action, rec["Id"], self._attrs(rec, **extra))

    def users_of_image(self, image_id: str) -> list[str]:
        """For the images service (its in-use checker): the containers made from an image."""
        return [cid for cid, rec in self._records.items() if rec.get("Image") == image_id]

    def users_of_volume(self, name: str) -> list[str]:
        """For the volumes service: the containers (any state) with a mount point on a volume."""
        return [cid for cid, rec in self._records.items()
                if any(p["Type"] == "volume" and p["Name"] == name for p in rec.get("MountPoints") or [])]

    def running_users_of_volume(self, name: str) -> list[str]:
        return [cid for cid in self.users_of_volume(name) if self._records[cid]["State"]["Running"]]

    def counts(self) -> dict[str, int]:
        counts = {"total": 0, "running": 0, "paused": 0, "stopped": 0}
        for rec in self._records.values():
            counts["total"] += 1
            st = rec["State"]
            if st["Paused"]:
                counts["paused"] += 1
            elif st["Running"]:
                counts["running"] += 1
            else:
                counts["stopped"] += 1
        return counts

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.daemon._log_error(task.exception())

    async def _blocking(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    # --- create ------------------------------------------------------------------------------

    def _new_name(self) -> str:
        taken = {rec["Name"] for rec in self._records.values()}
        for _ in range(100):
            name = f"{secrets.choice(util.LEFT)}_{secrets.choice(util.RIGHT)}"
            if "/" + name not in taken:
                return name
        return f"{secrets.choice(util.LEFT)}_{secrets.choice(util.RIGHT)}{secrets.randbelow(100)}"

    async def create(self, body: dict, name: str = "") -> tuple[str, list[str]]:
        if not isinstance(body, dict):
            raise InvalidArgument("config cannot be empty in order to create a container")
        if name:
            if not NAME_RE.match(name):
                raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            name = name.lstrip("/")
            for cid, rec in self._records.items():
                if rec["Name"] == "/" + name:
                    raise AlreadyExists(f'Conflict. The container name "/{name}" is already in use by container '
                                        f'"{cid}". You have to remove (or rename) that container to be able to '
                                        "reuse that name.")
        image_name = body.get("Image") or ""
        if not image_name:
            raise InvalidArgument("Config.Image: image name cannot be empty" if "Image" in body
                                  else "no image specified")
        host_config = specgen.check_host_config(body.get("HostConfig") or {})
        image = self.images.resolve(image_name)
        user = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        config = specgen.merge_config(image["config"], user)
        net_settings, net_warnings = self._networks().plan(config, host_config, body.get("NetworkingConfig"))
        points = self._plan_mounts(config, host_config)
        config["Image"] = image_name
        runtime = host_config.get("Runtime") or self.config.default_runtime
        self.config.runtime_path(runtime)  # InvalidArgument: unknown or invalid runtime name
        host_config["Runtime"] = runtime
        warnings = list(net_warnings)
        if host_config.get("Memory") and not specgen._swap_supported() and host_config.get("MemorySwap"):
            warnings.append("Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
                            "Memory limited without swap.")
        cid = secrets.token_hex(32)
        name = name or self._new_name()
        command = specgen.command_of(config)
        now = rfc3339nano()
        cdir = self.dir(cid)
        rec = {
            "Id": cid, "Created": now, "Path": command[0], "Args": command[1:],
            "State": util.state("created"), "Image": image["id"],
            "ResolvConfPath": os.path.join(cdir, "resolv.conf"), "HostnamePath": os.path.join(cdir, "hostname"),
            "HostsPath": os.path.join(cdir, "hosts"), "LogPath": self.log_path(cid), "Name": "/" + name,
            "RestartCount": 0, "Driver": "overlay2", "Platform": "linux", "MountLabel": "", "ProcessLabel": "",
            "AppArmorProfile": "", "ExecIDs": None, "HostConfig": host_config, "Config": config,
            "SnapshotKey": f"container-{cid}", "ImageSize": image["size"], "ManuallyStopped": False,
            "HasBeenStartedBefore": False, "MountPoints": [], "NetworkSettings": net_settings,
        }
        snapshotter = self.images.snapshotter
        os.makedirs(self.bundle(cid), mode=0o711, exist_ok=True)
        try:
            await self._blocking(snapshotter.prepare, rec["SnapshotKey"], image["chain_id"],
                                 {"berth.container": cid})
            rec["MountPoints"] = self._make_volumes(points)
            self.db.put(KIND, cid, rec, name=name, create=True)
        except AlreadyExists:
            await self._discard(cid, rec)
            other = next((i for i, r in self._records.items() if r["Name"] == "/" + name), "")
            raise AlreadyExists(f'Conflict. The container name "/{name}" is already in use by container "{other}". '
                                "You have to remove (or rename) that container to be able to reuse that name.") from None
        except BaseException:
            await self._discard(cid, rec)
            raise
        self._records[cid] = rec
        self._event(rec, "create")
        return cid, warnings

    def _networks(self) -> Any:
        return self.daemon.services["networks"]  # built before the API serves

    def _volumes(self) -> Any:
        return self.daemon.services["volumes"]  # built before the API serves

    def _plan_mounts(self, config: dict, hc: dict) -> list[dict]:
        """Every mount point of a new container (berth.daemon.mountspec), volumes unnamed yet."""
        inherited: list[dict] = []
        for spec in hc.get("VolumesFrom") or []:
            ref, mode = mountspec.parse_volumes_from(spec)
            _other_id, other = self.get(ref)
            inherited += mountspec.inherit(other.get("MountPoints") or [], mode)
        return mountspec.plan(config, hc, inherited)

    def _make_volumes(self, points: list[dict]) -> list[dict]:
        """Create the volumes the mount points name (named ones on demand, with the labels and
        driver options of ``--mount``), and an anonymous volume for each unnamed one. On an
        error, the anonymous volumes made here are removed again."""
        volumes = self._volumes()
        made: list[str] = []
        try:
            for p in points:
                if p["Type"] != "volume":
                    continue
                if p.get("Source"):  # inherited (--volumes-from): resolved, if still there
                    volumes.get(p["Name"])
                    continue
                vopts = (p.get("Spec") or {}).get("VolumeOptions") or {}
                driver = vopts.get("DriverConfig") or {}
                volume, created = volumes.create(p["Name"], driver.get("Name") or "", driver.get("Options"),
                                                 vopts.get("Labels"))
                if created and not p["Name"]:
                    made.append(volume["Name"])
                p.update(Name=volume["Name"], Source=volume["Mountpoint"], Driver=volume["Driver"])
        except BaseException:
            for name in made:
                with contextlib.suppress(errors.BerthError, OSError):
                    volumes.discard(name)
            raise
        return points

    async def _discard(self, cid: str, rec: dict) -> None:
        with contextlib.suppress(errors.BerthError, OSError):
            await self._blocking(self.images.snapshotter.remove, rec["SnapshotKey"])
        shutil.rmtree(self.dir(cid), ignore_errors=True)
        volumes = self.daemon.services.get("volumes")
        if volumes is not None and rec.get("MountPoints"):
            await volumes.remove_anonymous([p["Name"] for p in rec["MountPoints"] if p.get("Anonymous")])

    # --- start ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """The daemon's start hook: find the shims again (see the module docstring)."""
        await self._restore()

    async def stop(self) -> None:
        """The daemon's stop hook: stop watching; every container keeps running."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def start_container(self, ref: str) -> None:
        cid, _rec = self.get(ref)
        async with self._lock(cid):
            rec = self._records.get(cid)
            if rec is None:
                raise NotFound(f"No such container: {ref}")
            st = rec["State"]
            if st["Paused"]:
                raise Conflict("cannot start a paused container, try unpause instead")
            if st["Running"]:
                raise NotModified("container already started")
            if st["Status"] == "removing":
                raise Conflict("container is marked for removal and cannot be started")
            task = self._restart_tasks.pop(cid, None)
            if task is not None:
                task.cancel()
            rec["ManuallyStopped"] = False
            await self._start_locked(cid, rec)

    def _runtime_path(self, rec: dict) -> str:
        return self.config.runtime_path(rec["HostConfig"].get("Runtime") or self.config.default_runtime)

    async def _mount_rootfs(self, cid: str, rec: dict) -> str:
        rootfs = self.rootfs(cid)
        os.makedirs(rootfs, mode=0o755, exist_ok=True)
        if not os.path.ismount(rootfs):
            from berth.snapshots.mount import mount_all

            mounts = await self._blocking(self.images.snapshotter.mounts, rec["SnapshotKey"])
            await self._blocking(mount_all, mounts, rootfs)
        return rootfs

    def _unmount_rootfs(self, cid: str) -> None:
        from berth.snapshots.mount import unmount

        rootfs = self.rootfs(cid)
        for _ in range(8):
            if not os.path.ismount(rootfs):
                break
            try:
                unmount(rootfs)
            except OSError:
                with contextlib.suppress(OSError):
                    unmount(rootfs, detach=True)

    def _spec(self, cid: str, rec: dict, rootfs: str, etc: dict[str, str], netns_path: str | None = None) -> dict:
        return specgen.generate(specgen.SpecInput(
            container_id=cid, config=rec["Config"], host_config=rec["HostConfig"], rootfs=rootfs,
            cgroup_parent=self.config.cgroup_parent, etc_files=etc, mount_points=rec.get("MountPoints"),
            netns_path=netns_path))

    def _prepare_mounts(self, rec: dict, rootfs: str) -> None:
        """Before each start (a worker thread): volumes made with driver options mounted, a
        new empty volume filled with the image's content at its path (first start only,
        unless ``nocopy``: dockerd's copy-up), missing host directories of ``-v`` binds made."""
        for p in rec.get("MountPoints") or []:
            if p["Type"] == "bind" and p.get("CreateSource") and not os.path.exists(p["Source"]):
                os.makedirs(p["Source"], mode=0o755, exist_ok=True)
            elif p["Type"] == "volume":
                volumes = self._volumes()
                p["Source"] = volumes.activate(p["Name"], rec["Id"])
                if p.get("CopyData"):
                    volumes.copy_up(p["Name"], rootfs, p["Destination"])
                    p["CopyData"] = False

    def _volume_events(self, cid: str, rec: dict, action: str) -> None:
        for p in rec.get("MountPoints") or []:
            if p["Type"] == "volume":
                attrs = {"container": cid, "driver": p.get("Driver") or "local"}
                if action == "mount":
                    attrs.update({"destination": p["Destination"], "propagation": p.get("Propagation") or "",
                                  "read/write": str(bool(p.get("RW"))).lower()})
                self.events.publish("volume", action, p["Name"], attrs)

    def _release_volumes(self, cid: str, rec: dict) -> None:
        """After an exit: unmount the volumes with driver options that no running container uses."""
        volumes = self.daemon.services.get("volumes")
        if volumes is None:
            return
        for p in rec.get("MountPoints") or []:
            if p["Type"] == "volume":
                with contextlib.suppress(errors.BerthError, OSError):
                    volumes.deactivate(p["Name"], cid)

    def _log_options(self, rec: dict) -> tuple[int, int]:
        from berth.daemon.logs import parse_size

        opts = (rec["HostConfig"].get("LogConfig") or {}).get("Config") or {}
        size = parse_size(opts["max-size"]) if opts.get("max-size") else self.config.log_max_size
        files = int(opts.get("max-file") or self.config.log_max_file or 1)
        return size, max(1, files)

    async def _start_locked(self, cid: str, rec: dict) -> None:
        """Mount, write the bundle, start a shim, connect waiting attaches, start. Holds the lock."""
        from berth.shim.client import start_shim

        state_dir = self.shim_dir(cid)
        await self._cleanup_shim(cid)
        try:  # the network sandbox: namespace, interfaces, ports, DNS, /etc files (networks service)
            sandbox = await self._networks().setup(cid, rec)
        except errors.BerthError as exc:
            self._start_failed(cid, rec, str(exc))
            raise
        try:
            rootfs = await self._mount_rootfs(cid, rec)
            etc = sandbox.etc_files
            if any(p["Type"] != "tmpfs" for p in rec.get("MountPoints") or []):
                await self._blocking(self._prepare_mounts, rec, rootfs)
            spec = self._spec(cid, rec, rootfs, etc, sandbox.netns)
            atomic_write(os.path.join(self.bundle(cid), "config.json"), json.dumps(spec, indent=1).encode(), 0o600)
            size, files = self._log_options(rec)
            tty = bool(rec["Config"].get("Tty"))
            runtime = self._runtime_path(rec)
            client = await self._blocking(
                start_shim, cid, self.bundle(cid), state_dir, runtime, runtime_root=self.config.runtime_root,
                log_path=None if self._log_driver(rec) == "none" else self.log_path(cid), log_max_size=size,
                log_max_file=files, tty=tty,
                stdin=bool(rec["Config"].get("OpenStdin")), shim_binary=self.config.shim_path, timeout=60.0)
        except errors.BerthError as exc:
            await self._networks().teardown(cid, rec)
            self._start_failed(cid, rec, str(exc))
            if isinstance(exc, InvalidArgument) and not isinstance(exc, errors.FailedPrecondition):
                raise  # a bad user or group, an --init without tini: the spec, not the runtime
            raise InvalidArgument(f"failed to create task for container: OCI runtime create failed: {exc}") from None
        except OSError as exc:
            await self._networks().teardown(cid, rec)
            self._start_failed(cid, rec, str(exc))
            raise ServerError(f"failed to start container {cid}: {exc}") from None
        init_pid = int(client.ready.get("init_pid") or 0)
        await self._connect_pending_attaches(cid, rec, state_dir)
        started_at = rfc3339nano()
        try:
            await shimio.call(state_dir, "start")
        except errors.BerthError as exc:
            with contextlib.suppress(errors.BerthError):
                await shimio.call(state_dir, "delete", force=True)
            await self._networks().teardown(cid, rec)
            self._start_failed(cid, rec, str(exc))
            raise InvalidArgument(f"failed to start container {cid}: {exc}") from None
        generation = int(rec.get("Generation", 0)) + 1
        rec["Generation"] = generation
        st = rec["State"]
        st.update(Status="running", Running=True, Paused=False, Restarting=False, OOMKilled=False, Dead=False,
                  Pid=init_pid, ExitCode=0, Error="", StartedAt=started_at)
        rec["HasBeenStartedBefore"] = True
        self._save(rec)
        self._volume_events(cid, rec, "mount")
        self._event(rec, "start")
        self._watch(cid, generation)

    def _start_failed(self, cid: str, rec: dict, message: str) -> None:
        """As dockerd: the exit code says why (127 not found, 126 not executable, 128
        otherwise), attached clients are let go, and an --rm container is removed."""
        self._unmount_rootfs(cid)
        self._release_volumes(cid, rec)
        lower = message.lower()
        code = 127 if ("not found" in lower or "no such file" in lower) else 126 if "permission denied" in lower \
            else 128
        st = rec["State"]
        st.update(Error=message, ExitCode=code)
        if st["Status"] == "restarting":
            st.update(Status="exited", Restarting=False)
        self._save(rec)
        for _opts, future in self._pending_attach.pop(cid, []):
            if not future.done():
                future.set_exception(errors.FailedPrecondition(message))
        if rec["HostConfig"].get("AutoRemove"):
            self._spawn(self._auto_remove(cid))

    async def _connect_pending_attaches(self, cid: str, rec: dict, state_dir: str) -> None:
        pending = self._pending_attach.pop(cid, [])
        for opts, future in pending:
            if future.done():
                continue
            try:
                stream = await self._open_attach(state_dir, rec, opts)
            except errors.BerthError as exc:
                future.set_exception(exc)
            else:
                future.set_result(stream)

    async def _open_attach(self, state_dir: str, rec: dict, opts: dict) -> tuple:
        close_stdin = bool(rec["Config"].get("StdinOnce")) and not rec["Config"].get("Tty")
        _answer, reader, writer = await shimio.open_stream(
            state_dir, "attach", stdin=bool(opts.get("stdin")), stdout=bool(opts.get("stdout", True)),
            stderr=bool(opts.get("stderr", True)), close_stdin=close_stdin)
        return reader, writer

    async def _cleanup_shim(self, cid: str) -> None:
        """Remove what is left of a previous shim (a shim that outlived its container)."""
        state_dir = self.shim_dir(cid)
        if not os.path.isdir(state_dir):
            return
        from berth.shim.client import ShimClient

        client = ShimClient(state_dir)
        if client.alive():
            with contextlib.suppress(errors.BerthError):
                await shimio.call(state_dir, "delete", force=True, timeout=30)
        if os.path.isdir(state_dir):
            await self._runtime_force_delete(cid)
            shutil.rmtree(state_dir, ignore_errors=True)

    async def _runtime_force_delete(self, cid: str) -> None:
        """Kill and delete the container through the runtime directly (its shim is gone)."""
        rec = self._records.get(cid)
        try:
            runtime = self._runtime_path(rec) if rec else self.config.runtime_path(self.config.default_runtime)
        except InvalidArgument:
            return

        def run() -> None:
            for args in (["kill", "--all", cid, "KILL"], ["delete", "--force", cid]):
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run([runtime, "--root", self.config.runtime_root, *args], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20, check=False)

        await self._blocking(run)

    # --- watching exits --------------------------------------------------------------------

    def _watch(self, cid: str, generation: int) -> None:
        old = self._monitors.pop(cid, None)
        if old is not None:
            old.cancel()
        self._monitors[cid] = self._spawn(self._monitor(cid, generation))

    async def _monitor(self, cid: str, generation: int) -> None:
        state_dir = self.shim_dir(cid)
        error = ""
        try:
            info = await shimio.call(state_dir, "wait", timeout=None)
        except asyncio.CancelledError:
            raise
        except errors.BerthError as exc:
            info = util.read_exit(state_dir)
            if info is None:
                await asyncio.sleep(0.05)
                info = util.read_exit(state_dir)
            if info is None:
                error = f"berth-shim of container {cid[:12]} is gone ({exc})"
                await self._runtime_force_delete(cid)
                info = {"exit_code": LOST_EXIT_CODE, "exited_at": rfc3339nano(), "oom_killed": False}
        if self._monitors.get(cid) is asyncio.current_task():
            del self._monitors[cid]
        await self._on_exit(cid, generation, info, error)

    async def _on_exit(self, cid: str, generation: int, info: dict, error: str = "") -> None:
        async with self._lock(cid):
            rec = self._records.get(cid)
            if rec is None or rec.get("Generation") != generation or not rec["State"]["Running"]:
                return
            code = int(info.get("exit_code") if info.get("exit_code") is not None else LOST_EXIT_CODE)
            st = rec["State"]
            st.update(Status="exited", Running=False, Paused=False, Restarting=False, Pid=0, ExitCode=code,
                      FinishedAt=info.get("exited_at") or rfc3339nano(), OOMKilled=bool(info.get("oom_killed")),
                      Error=error)
            state_dir = self.shim_dir(cid)
            with contextlib.suppress(errors.BerthError):
                await shimio.call(state_dir, "delete", force=True, timeout=30)
            if os.path.isdir(state_dir):
                await self._runtime_force_delete(cid)
                shutil.rmtree(state_dir, ignore_errors=True)
            self._unmount_rootfs(cid)
            await self._networks().teardown(cid, rec)
            self._release_volumes(cid, rec)
            self._volume_events(cid, rec, "unmount")
            for eid in list(rec.get("ExecIDs") or []):
                ex = self._execs.get(eid)
                if ex is not None and ex["Running"]:
                    ex.update(Running=False, ExitCode=ex["ExitCode"] if ex["ExitCode"] is not None else 137)
            restart = self._should_restart(rec, code)
            if restart:
                st.update(Status="restarting", Restarting=True)
            self._save(rec)
            if st["OOMKilled"]:
                self._event(rec, "oom")
            self._event(rec, "die", exitCode=code)
            for future in self._exit_waiters.pop(cid, []):
                if not future.done():
                    future.set_result(code)
            if restart:
                self._schedule_restart(cid, rec)
            elif rec["HostConfig"].get("AutoRemove"):
                self._spawn(self._auto_remove(cid))

    def _should_restart(self, rec: dict, code: int) -> bool:
        if rec.get("ManuallyStopped") or self._closing:
            return False
        policy = rec["HostConfig"].get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure":
            limit = int(policy.get("MaximumRetryCount") or 0)
            return code != 0 and (limit == 0 or rec["RestartCount"] < limit)
        return False

    def _schedule_restart(self, cid: str, rec: dict) -> None:
        started = util.parse_time(rec["State"].get("StartedAt"))
        ran = time.time() - started if started else 0.0
        delay = self._backoff.get(cid, 0.0)
        if ran >= RESTART_RESET_AFTER:
            delay = 0.0
        delay = RESTART_MIN if delay == 0 else min(delay * 2, RESTART_MAX)
        self._backoff[cid] = delay
        self._restart_tasks[cid] = self._spawn(self._restart_later(cid, delay))

    async def _restart_later(self, cid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock(cid):
            if self._restart_tasks.get(cid) is not asyncio.current_task():
                return
            del self._restart_tasks[cid]
            rec = self._records.get(cid)
            if rec is None or not rec["State"]["Restarting"]:
                return
            rec["RestartCount"] += 1
            try:
                await self._start_locked(cid, rec)
            except errors.BerthError as exc:
                rec["State"].update(Status="exited", Restarting=False, Error=str(exc))
                self._save(rec)

    def _cancel_restart(self, cid: str, rec: dict) -> bool:
        task = self._restart_tasks.pop(cid, None)
        if task is not None:
            task.cancel()
        if rec["State"]["Restarting"]:
            rec["State"].update(Status="exited", Restarting=False)
            self._save(rec)
            return True
        return task is not None

    async def _auto_remove(self, cid: str) -> None:
        with contextlib.suppress(NotFound, Conflict):
            await self.remove(cid, force=True, volumes=True)  # as dockerd: --rm takes anonymous volumes too

    def _exit_future(self, cid: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._exit_waiters.setdefault(cid, []).append(future)
        return future

    # --- restore after a daemon restart ------------------------------------------------------

    async def _restore(self) -> None:
        from berth.shim.client import ShimClient, find_shims

        alive = set(find_shims(self.config.shims_root))
        for cid, rec in list(self._records.items()):
            st = rec["State"]
            state_dir = self.shim_dir(cid)
            if st["Status"] == "removing":
                self._spawn(self._auto_remove(cid))
                continue
            if not (st["Running"] or st["Restarting"]):
                continue
            if st["Restarting"] and not st["Running"]:
                self._schedule_restart(cid, rec)
                continue
            generation = int(rec.get("Generation", 0))
            if state_dir in alive:
                try:
                    state = await shimio.call(state_dir, "state", timeout=10)
                except errors.BerthError:
                    state = None
                if state is not None and state.get("exit_code") is None:
                    st["Paused"] = state.get("status") == "paused"
                    st["Status"] = "paused" if st["Paused"] else "running"
                    st["Pid"] = int(state.get("pid") or st.get("Pid") or 0)
                    await self._networks().resume(cid, rec)
                    self._save(rec)
                    self._watch(cid, generation)
                    continue
                if state is not None:
                    await self._on_exit(cid, generation, state)
                    continue
            info = ShimClient(state_dir).exit_status()
            error = ""
            if info is None:
                error = f"berth-shim of container {cid[:12]} is gone (found no exit status after a daemon restart)"
                await self._runtime_force_delete(cid)
                info = {"exit_code": LOST_EXIT_CODE, "exited_at": rfc3339nano(), "oom_killed": False}
            await self._on_exit(cid, generation, info, error)
        for state_dir in alive:
            cid = os.path.basename(state_dir)
            if cid not in self._records:  # a shim whose container was removed: nothing may keep running
                with contextlib.suppress(errors.BerthError):
                    await shimio.call(state_dir, "delete", force=True, timeout=30)
        await self._remove_orphans()
        await self._networks().sweep()  # what dead containers left: CNI attachments, namespaces
        for cid, rec in list(self._records.items()):
            st = rec["State"]
            if st["Running"] or st["Restarting"] or st["Status"] == "removing":
                continue
            policy = (rec["HostConfig"].get("RestartPolicy") or {}).get("Name")
            if policy == "always" or (policy == "unless-stopped" and not rec.get("ManuallyStopped")):
                if rec.get("HasBeenStartedBefore"):
                    self._spawn(self._start_on_boot(cid))

    async def _remove_orphans(self) -> None:
        """What a crash in the middle of a create or a remove left: container directories
        and snapshots without a record."""
        try:
            names = os.listdir(self.config.containers_root)
        except FileNotFoundError:
            names = []
        for name in names:
            if name not in self._records and re.fullmatch(r"[0-9a-f]{64}", name):
                self._unmount_rootfs(name)
                await self._blocking(shutil.rmtree, self.dir(name), True)
        try:
            snapshotter = self.images.snapshotter
            keys = [info.name for info in await self._blocking(lambda: list(snapshotter.walk()))]
        except errors.BerthError:
            return
        for key in keys:
            if key.startswith("container-") and key[len("container-"):] not in self._records:
                with contextlib.suppress(errors.BerthError):
                    await self._blocking(snapshotter.remove, key)

    async def _start_on_boot(self, cid: str) -> None:
        with contextlib.suppress(errors.BerthError):
            await self.start_container(cid)

    async def stop_container(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        """``docker stop``: the stop signal, then SIGKILL after ``timeout`` seconds."""
        cid, rec = self.get(ref)
        async with self._lock(cid):
            if self._cancel_restart(cid, rec):
                rec["ManuallyStopped"] = True
                self._save(rec)
                self._event(rec, "stop")
                return
            if not rec["State"]["Running"]:
                raise NotModified("container already stopped")
            rec["ManuallyStopped"] = True
            self._save(rec)
            config = rec["Config"]
            number = util.signal_number(signal or config.get("StopSignal") or "SIGTERM")
            if timeout is None:
                timeout = config.get("StopTimeout")
            if timeout is None:
                timeout = DEFAULT_STOP_TIMEOUT
            future = self._exit_future(cid)
            paused = rec["State"]["Paused"]
        await self._send_signal(cid, rec, number)
        if paused:
            with contextlib.suppress(errors.BerthError):
                await self._resume(cid, rec)
        try:
            await asyncio.wait_for(asyncio.shield(future), None if timeout < 0 else timeout)
        except asyncio.TimeoutError:
            await self._send_signal(cid, rec, 9)
            try:
                await asyncio.wait_for(asyncio.shield(future), 30)
            except asyncio.TimeoutError:
                raise ServerError(f"cannot stop container: {cid}: tried to kill container, but did not receive an "
                                  "exit event") from None
        self._event(rec, "stop")

    async def _send_signal(self, cid: str, rec: dict, number: int) -> None:
        self._event(rec, "kill", signal=number)
        try:
            await shimio.call(self.shim_dir(cid), "kill", signal=number, all=number == 9 or None)
        except FailedPrecondition:
            pass  # exited meanwhile
        except errors.Unavailable:
            pass  # the monitor reports the shim's death

    async def kill(self, ref: str, signal: str = "") -> None:
        cid, rec = self.get(ref)
        number = util.signal_number(signal or "SIGKILL")
        async with self._lock(cid):
            if not rec["State"]["Running"]:
                if self._cancel_restart(cid, rec):
                    rec["ManuallyStopped"] = True
                    self._save(rec)
                    return
                raise Conflict(f"Cannot kill container: {ref}: Container {cid} is not running")
            if number in (9, 15) or number == util.signal_number(rec["Config"].get("StopSignal") or "SIGTERM"):
                rec["ManuallyStopped"] = True
                self._save(rec)
            paused = rec["State"]["Paused"]
            future = self._exit_future(cid) if number == 9 else None
        await self._send_signal(cid, rec, number)
        if paused and number == 9:
            with contextlib.suppress(errors.BerthError):
                await self._resume(cid, rec)
        if future is not None:  # as dockerd's Kill: SIGKILL returns once the container has stopped (10 s at most)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), 10)

    async def restart(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        cid, rec = self.get(ref)
        with contextlib.suppress(NotModified):
            await self.stop_container(cid, timeout, signal)
        async with self._lock(cid):
            rec = self._records.get(cid)
            if rec is None:
                raise NotFound(f"No such container: {ref}")
            if not rec["State"]["Running"]:
                rec["ManuallyStopped"] = False
                await self._start_locked(cid, rec)
        self._event(rec, "restart")

    async def pause(self, ref: str) -> None:
        cid, rec = self.get(ref)
        async with self._lock(cid):
            st = rec["State"]
            if not st["Running"]:
                raise Conflict(f"Container {cid} is not running")
            if st["Paused"]:
                raise Conflict(f"Container {cid} is already paused")
            await shimio.call(self.shim_dir(cid), "pause")
            st.update(Paused=True, Status="paused")
            self._save(rec)
            self._event(rec, "pause")

    async def _resume(self, cid: str, rec: dict) -> None:
        await shimio.call(self.shim_dir(cid), "resume")
        rec["State"].update(Paused=False, Status="running" if rec["State"]["Running"] else rec["State"]["Status"])
        self._save(rec)

    async def unpause(self, ref: str) -> None:
        cid, rec = self.get(ref)
        async with self._lock(cid):
            st = rec["State"]
            if not st["Paused"]:
                raise Conflict(f"Container {cid} is not paused")
            await self._resume(cid, rec)
            self._event(rec, "unpause")

    # --- wait and remove ---------------------------------------------------------------------

    async def wait(self, ref: str, condition: str = "not-running") -> asyncio.Future:
        """A future of the exit code, registered now (so that a start after this call is seen)."""
        cid, rec = self.get(ref)
        condition = condition or "not-running"
        loop = asyncio.get_running_loop()
        if condition == "removed":
            future = loop.create_future()
            self._removed_waiters.setdefault(cid, []).append(future)
            return future
        if condition == "next-exit":
            return self._exit_future(cid)
        if condition != "not-running":
            raise InvalidArgument(f"invalid condition: \"{condition}\"")
        st = rec["State"]
        if not st["Running"] and not st["Restarting"]:
            future = loop.create_future()
            future.set_result(st["ExitCode"])
            return future
        return self._exit_future(cid)

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        cid, rec = self.get(ref)
        async with self._lock(cid):
            st = rec["State"]
            if cid in self._removing:
                raise Conflict(f"removal of container {cid} is already in progress")
            restarting = bool(self._restart_tasks.get(cid)) or st["Restarting"]
            if (st["Running"] or restarting) and not force:
                if st["Paused"]:
                    raise Conflict(f"cannot remove container \"{rec['Name']}\": container is paused and must be "
                                   "unpaused first")
                raise Conflict(f"You cannot remove a running container {cid}. Stop the container before attempting "
                               "removal or force remove")
            self._cancel_restart(cid, rec)
            rec["ManuallyStopped"] = True
            running = st["Running"]
            paused = st["Paused"]
            future = self._exit_future(cid) if running else None
            self._removing.add(cid)
        try:
            if running:
                await self._send_signal(cid, rec, 9)
                if paused:
                    with contextlib.suppress(errors.BerthError):
                        await self._resume(cid, rec)
                try:
                    await asyncio.wait_for(asyncio.shield(future), 30)
                except asyncio.TimeoutError:
                    raise ServerError(f"cannot remove container {cid}: could not kill it") from None
            async with self._lock(cid):
                rec = self._records.get(cid)
                if rec is None:
                    return
                rec["State"]["Status"] = "removing"
                self._save(rec)
                await self._cleanup_shim(cid)
                self._unmount_rootfs(cid)
                await self._networks().teardown(cid, rec)
                with contextlib.suppress(NotFound):
                    await self._blocking(self.images.snapshotter.remove, rec["SnapshotKey"])
                await self._blocking(shutil.rmtree, self.dir(cid), True)
                self.db.delete(KIND, cid)
                self._records.pop(cid, None)
                if volumes:  # rm -v: the anonymous volumes nothing else uses; named ones stay
                    anonymous = [p["Name"] for p in rec.get("MountPoints") or []
                                 if p["Type"] == "volume" and p.get("Anonymous")]
                    volumes_svc = self.daemon.services.get("volumes")
                    if volumes_svc is not None and anonymous:
                        await volumes_svc.remove_anonymous(anonymous)
                for eid in rec.get("ExecIDs") or []:
                    self._execs.pop(eid, None)
                self._backoff.pop(cid, None)
                self._event(rec, "destroy")
                code = rec["State"]["ExitCode"]
                for future in self._removed_waiters.pop(cid, []) + self._exit_waiters.pop(cid, []):
                    if not future.done():
                        future.set_result(code)
                for _opts, future in self._pending_attach.pop(cid, []):
                    if not future.done():
                        future.set_exception(NotFound(f"No such container: {cid}"))
        finally:
            self._removing.discard(cid)
            self._locks.pop(cid, None)


    async def rename(self, ref: str, new_name: str) -> None:
        cid, rec = self.get(ref)
        if not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        if not NAME_RE.match(new_name):
            raise InvalidArgument(f"Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        new_name = new_name.lstrip("/")
        old = rec["Name"]
        if old == "/" + new_name:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        for other, orec in self._records.items():
            if orec["Name"] == "/" + new_name:
                raise AlreadyExists(f'Conflict. The container name "/{new_name}" is already in use by container '
                                    f'"{other}". You have to remove (or rename) that container to be able to reuse '
                                    "that name.")
        async with self._lock(cid):
            self.db.rename(KIND, cid, new_name)
            rec["Name"] = "/" + new_name
            self._save(rec)
            self._event(rec, "rename", oldName=old)

    # --- update, resize, top, stats ---------------------------------------------------------

    _UPDATABLE = ("BlkioWeight", "CpuShares", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime",
                  "CpusetCpus", "CpusetMems", "Memory", "MemoryReservation", "MemorySwap", "KernelMemory",
                  "NanoCpus", "PidsLimit", "OomKillDisable", "MemorySwappiness")

    async def update(self, ref: str, body: dict) -> list[str]:
        cid, rec = self.get(ref)
        async with self._lock(cid):
            hc = dict(rec["HostConfig"])
            for key in self._UPDATABLE:
                if key in body and body[key] is not None and (body[key] or key in ("PidsLimit",)):
                    hc[key] = body[key]
            if body.get("RestartPolicy") and (body["RestartPolicy"].get("Name") or "") != "":
                if hc.get("AutoRemove") and body["RestartPolicy"]["Name"] != "no":
                    raise InvalidArgument("Restart policy cannot be updated because AutoRemove is enabled for the "
                                          "container")
                hc["RestartPolicy"] = body["RestartPolicy"]
            if hc.get("Memory") and hc.get("MemorySwap") and 0 < int(hc["MemorySwap"]) < int(hc["Memory"]):
                raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
            checked = specgen.check_host_config(hc)
            if rec["State"]["Running"]:
                resources = specgen.oci_resources(checked)
                try:
                    await shimio.call(self.shim_dir(cid), "update", resources=resources)
                except errors.BerthError as exc:
                    raise InvalidArgument(f"Cannot update container {cid}: {exc}") from None
            rec["HostConfig"] = checked
            self._save(rec)
            self._event(rec, "update")
        return []

    def _running_shim(self, cid: str, rec: dict) -> str:
        if not rec["State"]["Running"]:
            raise Conflict(f"Container {cid} is not running")
        return self.shim_dir(cid)

    async def resize(self, ref: str, height: int, width: int) -> None:
        cid, rec = self.get(ref)
        await shimio.call(self._running_shim(cid, rec), "resize", width=width, height=height)

    async def top(self, ref: str, ps_args: str = "") -> dict:
        cid, rec = self.get(ref)
        state_dir = self._running_shim(cid, rec)
        if rec["State"]["Restarting"]:
            raise Conflict(f"Container {cid} is restarting, wait until the container is running")
        pids = (await shimio.call(state_dir, "pids")).get("pids") or []
        args = ps_args.split() if ps_args else ["-ef"]
        proc = await asyncio.create_subprocess_exec("ps", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                    stdin=subprocess.DEVNULL)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise ServerError(f"ps: {err.decode(errors='replace').strip() or 'exit status ' + str(proc.returncode)}")
        return util.parse_ps(out.decode(errors="replace"), [int(p) for p in pids])

    async def stats(self, ref: str, stream: bool = True, one_shot: bool = False) -> AsyncIterator[dict]:
        cid, rec = self.get(ref)
        previous = util.empty_cpu()
        prev_read = ZERO_TIME
        if not stream and not one_shot:
            first = await self._sample(cid, rec)
            if first is not None:
                previous, prev_read = first["cpu_stats"], first["read"]
                await asyncio.sleep(1.0)
        while True:
            sample = await self._sample(cid, rec)
            if sample is None:
                sample = util.empty_stats(cid, rec)
            sample["precpu_stats"] = previous
            sample["preread"] = prev_read
            yield sample
            if not stream:
                return
            previous, prev_read = sample["cpu_stats"], sample["read"]
            if not rec["State"]["Running"] or cid not in self._records:
                return
            await asyncio.sleep(1.0)

    async def _sample(self, cid: str, rec: dict) -> dict | None:
        if not rec["State"]["Running"]:
            return None
        try:
            data = (await shimio.call(self.shim_dir(cid), "stats", timeout=10)).get("stats") or {}
        except errors.BerthError:
            return None
        return util.docker_stats(cid, rec, data)

    # --- logs --------------------------------------------------------------------------------

    @staticmethod
    def _log_driver(rec: dict) -> str:
        return (rec["HostConfig"].get("LogConfig") or {}).get("Type") or "json-file"

    def logs(self, ref: str, *, follow: bool = False, stdout: bool = True, stderr: bool = True, since: str = "",
             until: str = "", tail: str = "all", timestamps: bool = False) -> tuple[bool, AsyncIterator[tuple[int, bytes]]]:
        from berth.daemon.logs import LogReader, parse_since

        cid, rec = self.get(ref)
        if self._log_driver(rec) == "none":
            raise LogsNotSupported("configured logging driver does not support reading")
        if not (stdout or stderr):
            raise InvalidArgument("Bad parameters: you must choose at least one stream")
        tail_n: int | None = None
        if tail not in ("", "all"):
            try:
                tail_n = int(tail)
            except ValueError:
                raise InvalidArgument(f"invalid value for \"tail\": {tail!r}") from None
            if tail_n < 0:
                tail_n = None
        reader = LogReader(rec["LogPath"], stdout=stdout, stderr=stderr, since=parse_since(since),
                           until=parse_since(until), tail=tail_n, timestamps=timestamps)

        def done() -> bool:
            current = self._records.get(cid)
            return current is None or not (current["State"]["Running"] or current["State"]["Restarting"])

        return bool(rec["Config"].get("Tty")), reader.entries(follow=follow, done=done)

    # --- attach ------------------------------------------------------------------------------

    async def attach(self, ref: str, stdin: bool, stdout: bool, stderr: bool) -> tuple[dict, Any]:
        """The container and an awaitable of (reader, writer) on the shim's attach stream:
        at once when it runs, else at its next start."""
        cid, rec = self.get(ref)
        opts = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
        if rec["State"]["Paused"]:
            raise Conflict(f"container {cid} is paused, unpause the container before attach")
        if rec["State"]["Running"]:
            return rec, self._open_attach(self.shim_dir(cid), rec, opts)
        future = asyncio.get_running_loop().create_future()
        self._pending_attach.setdefault(cid, []).append((opts, future))
        return rec, future

    def forget_attach(self, ref: str, future: asyncio.Future) -> None:
        with contextlib.suppress(NotFound):
            cid, _rec = self.get(ref)
            self._pending_attach[cid] = [p for p in self._pending_attach.get(cid, []) if p[1] is not future]

    # --- exec --------------------------------------------------------------------------------

    def exec_create(self, ref: str, body: dict) -> str:
        cid, rec = self.get(ref)
        st = rec["State"]
        if not st["Running"]:
            raise Conflict(f"Container {cid} is not running")
        if st["Paused"]:
            raise Conflict(f"Container {cid} is paused, unpause the container before exec")
        if st["Restarting"]:
            raise Conflict(f"Container {cid} is restarting, wait until the container is running")
        cmd = body.get("Cmd")
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise InvalidArgument("No exec command specified")
        eid = secrets.token_hex(32)
        self._execs[eid] = {
            "ID": eid, "Running": False, "ExitCode": None, "ProcessConfig": {
                "tty": bool(body.get("Tty")), "entrypoint": cmd[0], "arguments": list(cmd[1:]),
                "privileged": bool(body.get("Privileged")), "user": body.get("User") or ""},
            "OpenStdin": bool(body.get("AttachStdin")), "OpenStderr": bool(body.get("AttachStderr")),
            "OpenStdout": bool(body.get("AttachStdout")), "CanRemove": False, "ContainerID": cid,
            "DetachKeys": body.get("DetachKeys") or "", "Pid": 0, "Started": False,
            "Config": {"Cmd": list(cmd), "Env": list(body.get("Env") or []), "User": body.get("User") or "",
                       "WorkingDir": body.get("WorkingDir") or "", "Tty": bool(body.get("Tty")),
                       "Privileged": bool(body.get("Privileged")), "ConsoleSize": body.get("ConsoleSize")},
        }
        rec["ExecIDs"] = [*(rec.get("ExecIDs") or []), eid]
        self._save(rec)
        self._event(rec, f"exec_create: {' '.join(cmd)}", execID=eid)
        return eid

    def exec_get(self, eid: str) -> dict:
        ex = self._execs.get(eid)
        if ex is None:
            raise NotFound(f"No such exec instance: {eid}")
        return ex

    def exec_inspect(self, eid: str) -> dict:
        ex = self.exec_get(eid)
        return {k: v for k, v in ex.items() if k not in ("Config", "Started")}

    def _exec_process(self, ex: dict) -> dict:
        cid = ex["ContainerID"]
        try:
            with open(os.path.join(self.bundle(cid), "config.json"), "rb") as f:
                spec = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise Conflict(f"Container {cid} is not running ({exc})") from None
        return specgen.exec_process(spec, ex["Config"], self.rootfs(cid))

    async def exec_start(self, eid: str, detach: bool, tty: bool | None = None) -> tuple[dict, Any]:
        """Detached: start it and return (exec, None). Attached: (exec, (reader, writer))."""
        ex = self.exec_get(eid)
        cid = ex["ContainerID"]
        rec = self._records.get(cid)
        if rec is None:
            raise NotFound(f"No such container: {cid}")
        if ex["Started"]:
            raise Conflict(f"Error: Exec command {eid} has already run")
        if not rec["State"]["Running"]:
            raise Conflict(f"Container {cid} is not running")
        if rec["State"]["Paused"]:
            raise Conflict(f"Container {cid} is paused, unpause the container before exec")
        if tty is not None:
            ex["Config"]["Tty"] = bool(tty) or ex["Config"]["Tty"]
        ex["Started"] = True
        try:
            process = self._exec_process(ex)
        except errors.BerthError:
            ex.update(Running=False, ExitCode=126)
            raise
        state_dir = self.shim_dir(cid)
        use_tty = bool(ex["Config"]["Tty"])
        stdin = bool(ex["OpenStdin"])
        self._event(rec, f"exec_start: {' '.join(ex['Config']['Cmd'])}", execID=eid)
        try:
            if detach:
                answer = await shimio.call(state_dir, "exec", exec_id=eid, process=process, tty=use_tty, stdin=False)
                stream = None
            else:
                attach = {"stdin": stdin, "stdout": bool(ex["OpenStdout"]), "stderr": bool(ex["OpenStderr"]),
                          "close_stdin": stdin and not use_tty}
                answer, reader, writer = await shimio.open_stream(state_dir, "exec", exec_id=eid, process=process,
                                                                  tty=use_tty, stdin=stdin, attach=attach)
                stream = (reader, writer)
        except errors.BerthError as exc:
            ex.update(Running=False, ExitCode=126)  # dockerd: 126 for any exec that could not start
            raise Conflict(f"OCI runtime exec failed: {exc}") from None
        ex.update(Running=True, Pid=int(answer.get("pid") or 0))
        size = ex["Config"].get("ConsoleSize")
        if use_tty and isinstance(size, list) and len(size) == 2 and all(size):
            with contextlib.suppress(errors.BerthError):
                await shimio.call(state_dir, "resize", width=int(size[1]), height=int(size[0]), exec_id=eid)
        if detach:
            self._spawn(self.exec_wait(eid))
        return ex, stream

    async def exec_wait(self, eid: str) -> int:
        """Wait for an exec to exit; record and report its code."""
        ex = self.exec_get(eid)
        if not ex["Running"]:
            return ex["ExitCode"] if ex["ExitCode"] is not None else 0
        cid = ex["ContainerID"]
        try:
            info = await shimio.call(self.shim_dir(cid), "wait", timeout=None, exec_id=eid)
            code = int(info.get("exit_code") or 0)
        except errors.BerthError:
            code = 137 if ex["ExitCode"] is None else ex["ExitCode"]
        if ex["Running"]:
            ex.update(Running=False, ExitCode=code, Pid=0)
            rec = self._records.get(cid)
            if rec is not None:
                self._event(rec, "exec_die", execID=eid, exitCode=code)
        return ex["ExitCode"]

    async def exec_resize(self, eid: str, height: int, width: int) -> None:
        ex = self.exec_get(eid)
        if not ex["Running"]:
            raise Conflict(f"Exec {eid} is not running")
        await shimio.call(self.shim_dir(ex["ContainerID"]), "resize", width=width, height=height, exec_id=eid)

    # --- views -------------------------------------------------------------------------------

    def _size(self, rec: dict) -> tuple[int, int]:
        try:
            usage = self.images.snapshotter.usage(rec["SnapshotKey"])
            size_rw = int(usage.size)
        except errors.BerthError:
            size_rw = 0
        return size_rw, size_rw + int(rec.get("ImageSize") or 0)

    def _mounts_view(self, rec: dict) -> list[dict]:
        return [mountspec.view(p) for p in rec.get("MountPoints") or []]

    def _network_view(self, rec: dict) -> dict:
        return self._networks().view(rec)

    def inspect(self, ref: str, size: bool = False) -> dict:
        cid, rec = self.get(ref)
        out = {k: v for k, v in rec.items() if k not in _PRIVATE}
        out["State"] = dict(rec["State"])
        if out["State"]["Status"] == "removing":
            out["State"]["Status"] = "removing"
        out["Config"] = {k: v for k, v in rec["Config"].items()}
        hostname = rec["Config"].get("Hostname") or cid[:12]
        out["Config"]["Hostname"] = hostname
        out["Config"].setdefault("Volumes", None)
        out["GraphDriver"] = {"Name": "overlay2", "Data": self._graph_data(rec)}
        out["Mounts"] = self._mounts_view(rec)
        out["NetworkSettings"] = self._network_view(rec)
        out["ExecIDs"] = [e for e in rec.get("ExecIDs") or [] if e in self._execs] or None
        if size:
            out["SizeRw"], out["SizeRootFs"] = self._size(rec)
        return out

    def _graph_data(self, rec: dict) -> dict | None:
        snap = self.images.snapshotter
        upper_and_lowers = getattr(snap, "upper_and_lowers", None)
        if upper_and_lowers is None:
            return None
        try:
            upper, lowers = upper_and_lowers(rec["SnapshotKey"])
        except errors.BerthError:
            return None
        return {"LowerDir": ":".join(lowers), "UpperDir": upper, "MergedDir": self.rootfs(rec["Id"]),
                "WorkDir": os.path.join(os.path.dirname(upper), "work")}

    def summaries(self, all_: bool = False, size: bool = False, filters: dict | None = None,
                  limit: int = -1) -> list[dict]:
        records = sorted(self._records.values(), key=lambda r: r["Created"], reverse=True)
        out = []
        for rec in records:
            st = rec["State"]
            if not all_ and not st["Running"] and limit <= 0 and not (filters or {}).get("status"):
                continue
            if filters and not self._matches(rec, filters):
                continue
            out.append(self._summary(rec, size))
            if 0 < limit <= len(out):
                break
        return out

    def _matches(self, rec: dict, filters: dict[str, list[str]]) -> bool:
        st = rec["State"]
        for key, wanted in filters.items():
            if not wanted:
                continue
            if key == "status":
                if st["Status"] not in wanted:
                    return False
            elif key == "name":
                if not any(re.search(w, rec["Name"][1:]) or re.search(w, rec["Name"]) for w in wanted):
                    return False
            elif key == "id":
                if not any(rec["Id"].startswith(w) for w in wanted):
                    return False
            elif key == "label":
                labels = rec["Config"].get("Labels") or {}
                for item in wanted:
                    k, eq, v = item.partition("=")
                    if k not in labels or (eq and labels[k] != v):
                        return False
            elif key == "ancestor":
                if not any(self._is_ancestor(rec, w) for w in wanted):
                    return False
            elif key == "exited":
                if st["Running"] or str(st["ExitCode"]) not in wanted or not rec.get("HasBeenStartedBefore"):
                    return False
            elif key in ("before", "since"):
                continue
            elif key == "is-task":
                continue
            elif key == "volume":
                points = rec.get("MountPoints") or []
                if not any(p.get("Name") == w or p["Destination"] == w or p.get("Source") == w
                           for w in wanted for p in points):
                    return False
            elif key == "network":
                nets = (rec.get("NetworkSettings") or {}).get("Networks") or {}
                if not any(w == n or (w and (ep.get("NetworkID") or "").startswith(w))
                           for w in wanted for n, ep in nets.items()):
                    return False
            elif key in ("health", "publish", "expose", "isolation"):
                continue
            else:
                raise InvalidArgument(f"invalid filter '{key}'")
        return True

    def _is_ancestor(self, rec: dict, wanted: str) -> bool:
        if rec["Config"].get("Image") == wanted or rec["Image"] == wanted or rec["Image"].split(":")[-1].startswith(wanted):
            return True
        try:
            return self.images.resolve(wanted)["id"] == rec["Image"]
        except errors.BerthError:
            return False

    def _summary(self, rec: dict, size: bool) -> dict:
        cid = rec["Id"]
        mode = rec["HostConfig"].get("NetworkMode") or "bridge"
        command = " ".join([rec["Path"], *rec["Args"]])
        if rec["HostConfig"].get("Init"):
            command = "/sbin/docker-init -- " + command
        out = {
            "Id": cid, "Names": [rec["Name"]], "Image": rec["Config"].get("Image") or rec["Image"],
            "ImageID": rec["Image"], "Command": command, "Created": int(util.parse_time(rec["Created"]) or 0),
            "Ports": self._networks().summary_ports(rec), "Labels": rec["Config"].get("Labels") or {},
            "State": rec["State"]["Status"],
            "Status": util.status_text(rec), "HostConfig": {"NetworkMode": mode},
            "NetworkSettings": {"Networks": self._network_view(rec)["Networks"]}, "Mounts": self._mounts_view(rec),
        }
        if size:
            out["SizeRw"], out["SizeRootFs"] = self._size(rec)
        return out


_PRIVATE = ("SnapshotKey", "ManuallyStopped", "Generation", "ImageSize", "HasBeenStartedBefore", "Volumes",
            "MountPoints", "BerthNetworks")

"""A container's stored state under ``<root>/<id>/`` and its derived status.

Stored (state.json, written atomically): id, init pid and its start time, bundle,
rootfs, created time, owner, annotations, cgroup paths and the config it was created
from. Derived on every read (crun's way): ``created`` while the exec fifo exists and
init lives, ``paused`` while the freezer says so, ``running`` while init lives,
``stopped`` otherwise.
"""

from __future__ import annotations

from berth._sys import jsonfast as json
import os
import time

from berth import OCI_SPEC_VERSION
from berth._sys.files import atomic_write
from berth._sys.proc import is_alive
from berth.errors import AlreadyExists, InvalidArgument, NotFound
from berth.spec import status as st

STATE_FILE = "state.json"
FIFO_NAME = "exec.fifo"
DEFAULT_ROOT = "/run/berth-runtime"


def validate_id(container_id: str) -> None:
    ok = container_id and container_id not in (".", "..") and all(
        c.isalnum() or c in "_+-." for c in container_id
    )
    if not ok:
        raise InvalidArgument(f"invalid container id format: {container_id!r}")


def utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


class Container:
    """One container's directory and record. Use ``load`` or ``create_dir``."""

    def __init__(self, root: str, container_id: str, record: dict) -> None:
        self.root = root
        self.id = container_id
        self.dir = os.path.join(root, container_id)
        self.record = record
        self.waiter = 0  # a foreground run's stage 1, the init's parent (not stored)

    # --- storage -----------------------------------------------------------
    @classmethod
    def create_dir(cls, root: str, container_id: str) -> "Container":
        validate_id(container_id)
        os.makedirs(root, mode=0o700, exist_ok=True)
        path = os.path.join(root, container_id)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise AlreadyExists(f"container with given ID already exists: {container_id}") from None  # runc's words
        return cls(root, container_id, {"id": container_id})

    @classmethod
    def load(cls, root: str, container_id: str) -> "Container":
        validate_id(container_id)
        path = os.path.join(root, container_id, STATE_FILE)
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read())
        except FileNotFoundError:
            raise NotFound("container does not exist") from None
        except ValueError:
            raise InvalidArgument(f"corrupt state file {path}") from None
        return cls(root, container_id, record)

    def save(self) -> None:
        atomic_write(os.path.join(self.dir, STATE_FILE), json.dumps(self.record).encode())

    def remove_dir(self) -> None:
        for name in os.listdir(self.dir) if os.path.isdir(self.dir) else ():
            try:
                os.unlink(os.path.join(self.dir, name))
            except IsADirectoryError:
                pass
        try:
            os.rmdir(self.dir)
        except FileNotFoundError:
            pass

    # --- derived -----------------------------------------------------------
    @property
    def pid(self) -> int:
        return int(self.record.get("pid", 0))

    @property
    def fifo_path(self) -> str:
        return os.path.join(self.dir, FIFO_NAME)

    @property
    def config(self) -> dict:
        return self.record.get("config", {})

    def alive(self) -> bool:
        return is_alive(self.pid, self.record.get("pid_start"))

    def status(self) -> str:
        if not self.alive():
            return st.STOPPED
        if self.record.get("cgroup") and self.cgroup().frozen():
            return st.PAUSED  # before created, as runc: a paused created container is "paused"
        if os.path.exists(self.fifo_path):
            return st.CREATED
        return st.RUNNING

    def cgroup(self):  # -> berth.runtime.cgroups.Cgroup
        from berth.runtime.cgroups import from_state

        return from_state(self.record["cgroup"])

    def oci_state(self, status: str | None = None) -> dict:
        """The OCI state as ``runc state`` prints it."""
        status = status or self.status()
        out = {
            "ociVersion": OCI_SPEC_VERSION,
            "id": self.id,
            "pid": self.pid if status != st.STOPPED else 0,
            "status": status,
            "bundle": self.record.get("bundle", ""),
            "rootfs": self.record.get("rootfs", ""),
            "created": self.record.get("created", ""),
            "owner": self.record.get("owner", ""),
        }
        annotations = self.config.get("annotations")
        if annotations:
            out["annotations"] = annotations
        return out

    def hook_state(self, status: str) -> dict:
        """The state passed to hooks on stdin (runtime-spec: includes pid while it lives)."""
        out = {
            "ociVersion": OCI_SPEC_VERSION,
            "id": self.id,
            "status": status,
            "pid": self.pid,
            "bundle": self.record.get("bundle", ""),
        }
        annotations = self.config.get("annotations")
        if annotations:
            out["annotations"] = annotations
        return out


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(root, n, STATE_FILE)))

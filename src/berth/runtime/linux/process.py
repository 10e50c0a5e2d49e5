"""The last steps before execve: rlimits, user, capabilities, cwd, env, the executable."""

from __future__ import annotations

import os
import stat

from berth._sys import libc

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}


class ExecError(OSError):
    """The executable cannot be run; the message is runc's ("exec: ...")."""


def set_rlimits(rlimits: list[dict] | None) -> None:
    import resource

    for rl in rlimits or ():
        kind = RLIMITS.get(rl["type"])
        if kind is None:
            raise OSError(22, f"unknown rlimit type {rl['type']!r}")
        try:
            resource.setrlimit(kind, (rl.get("soft", 0), rl.get("hard", 0)))
        except (OSError, ValueError) as exc:
            raise OSError(getattr(exc, "errno", 1) or 1,
                          f"error setting rlimit type {rl['type'][7:].lower()}: {exc}") from None


def set_oom_score_adj(value: int | None) -> None:
    if value is None:
        return
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(value))


def env_dict(env: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in env or ():
        key, _, value = entry.partition("=")
        out[key] = value
    return out


def home_of(uid: int) -> str:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def look_path(name: str, env: dict[str, str]) -> str:
    """Resolve the executable like Go's exec.LookPath in runc, with runc's messages."""
    def executable(path: str) -> int:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            return 21
        return 0 if st.st_mode & 0o111 else 13

    if "/" in name:
        try:
            err = executable(name)
        except OSError as exc:
            raise ExecError(exc.errno, f'exec: "{name}": stat {name}: {exc.strerror.lower()}') from None
        if err:
            raise ExecError(err, f'exec: "{name}": permission denied' if err == 13 else f'exec: "{name}": is a directory')
        return name
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            if executable(candidate) == 0:
                return candidate
        except OSError:
            continue
    raise ExecError(2, f'exec: "{name}": executable file not found in $PATH')


def switch_user(user: dict, in_userns: bool, setgroups_allowed: bool) -> None:
    """Set groups, gid and uid, keeping capabilities across the switch (the caller applies them next)."""
    uid = user.get("uid", 0)
    gid = user.get("gid", 0)
    fix_stdio_permissions(uid)
    libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    if setgroups_allowed:
        os.setgroups(list(user.get("additionalGids") or []))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc.prctl(libc.PR_SET_KEEPCAPS, 0)
    if "umask" in user and user["umask"] is not None:
        os.umask(user["umask"])
    else:
        os.umask(0o022)


def fix_stdio_permissions(uid: int) -> None:
    """runc's fixStdioPermissions: give stdio (but /dev/null) to the process's user, so that
    a non-root process can reopen /dev/stdout; the gid stays. Errors that only mean "not
    ours to change" (EINVAL, EPERM, EROFS) are ignored."""
    try:
        null_rdev = os.stat("/dev/null").st_rdev
    except OSError:
        null_rdev = -1
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_uid == uid or (stat.S_ISCHR(st.st_mode) and st.st_rdev == null_rdev):
            continue
        try:
            os.fchown(fd, uid, -1)
        except OSError as exc:
            if exc.errno not in (1, 22, 30):
                raise


def close_fds_from(first: int, keep: tuple[int, ...] = ()) -> None:
    """Mark every fd >= first close-on-exec, except those to keep (made inheritable)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < first:
            continue
        try:
            os.set_inheritable(fd, fd in keep)
        except OSError:
            pass

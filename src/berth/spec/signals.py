"""Signal names and numbers as runc parses them: "9", "KILL", "SIGKILL", "sigkill"."""

from __future__ import annotations

from berth.errors import InvalidArgument

_LINUX_SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
    "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
    "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN = 34
SIGRTMAX = 64


def parse_signal(raw: str) -> int:
    text = raw.strip()
    if text.isdigit():
        number = int(text)
        if 0 < number <= SIGRTMAX:
            return number
        raise InvalidArgument(f"invalid signal: {raw}")
    name = text.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in _LINUX_SIGNALS:
        return _LINUX_SIGNALS[name]
    for base, sign in (("RTMIN", 1), ("RTMAX", -1)):
        if name.startswith(base):
            offset = name[len(base):]
            start = SIGRTMIN if sign > 0 else SIGRTMAX
            if not offset:
                return start
            if offset[0] in "+-" and offset[1:].isdigit():
                number = start + int(offset)
                if SIGRTMIN <= number <= SIGRTMAX:
                    return number
    raise InvalidArgument(f'unknown signal "{raw}"')  # runc's (Go's %q) quotes

"""JSON through the C accelerator ``_json`` without importing ``json`` (which pulls in ``re``,
``enum`` and friends: ~4 ms and ~1 MiB on every short-lived runtime command).

Same results as ``json.loads``/``json.dumps`` for what the runtime reads and writes;
decode errors raise ``ValueError`` (``json.JSONDecodeError`` is one) with the position.
"""

from __future__ import annotations

import _json

_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}
_WS = " \t\n\r"


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}


_scan = _json.make_scanner(_Context())


def loads(text: str | bytes) -> object:
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8-sig" if text[:3] == b"\xef\xbb\xbf" else "utf-8")
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    except SystemError:
        # _json raises json.decoder.JSONDecodeError only if json.decoder is already imported;
        # otherwise a malformed document inside an object or array surfaces as SystemError.
        # Bad input may be slow: let the full module say where it is wrong.
        import json

        json.loads(text)
        raise ValueError("invalid JSON") from None
    if text[end:].strip(_WS):
        raise ValueError(f"Extra data: char {end}")
    return value


def load(fileobj) -> object:  # noqa: ANN001 - any object with read()
    return loads(fileobj.read())


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


_compact = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
_spaced = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)


def dumps(obj: object, indent: int | str | None = None, separators: tuple[str, str] | None = None) -> str:
    """``json.dumps`` with ``ensure_ascii``; ``separators`` only (",", ":") or the default."""
    if indent is None:
        encoder = _compact if separators == (",", ":") else _spaced
        return "".join(encoder(obj, 0))
    step = indent if isinstance(indent, str) else " " * indent
    parts: list[str] = []
    _pretty(obj, step, "", parts)
    return "".join(parts)


def _pretty(obj: object, step: str, current: str, out: list[str]) -> None:
    inner = current + step
    if isinstance(obj, dict) and obj:
        out.append("{")
        first = True
        for key, value in obj.items():
            out.append(("\n" if first else ",\n") + inner + _json.encode_basestring_ascii(str(key)) + ": ")
            _pretty(value, step, inner, out)
            first = False
        out.append("\n" + current + "}")
    elif isinstance(obj, (list, tuple)) and obj:
        out.append("[")
        for i, value in enumerate(obj):
            out.append(("\n" if i == 0 else ",\n") + inner)
            _pretty(value, step, inner, out)
        out.append("\n" + current + "]")
    elif isinstance(obj, float):
        out.append(_float(obj))
    else:
        out.append("".join(_compact(obj, 0)))

"""Output for ``berth``: Docker's tables, durations and sizes, and a Go-template subset for
``--format``.

Templates: ``{{.Field.Sub}}``, ``{{json .}}``, ``{{index .Labels "k"}}``, ``{{join .Names ","}}``,
``{{len .X}}``, ``{{lower}}``/``{{upper}}``/``{{title}}``, ``{{printf "%s" .X}}``, ``{{println}}``,
``{{if PIPE}}…{{else}}…{{end}}``, ``{{range PIPE}}…{{end}}``, ``{{eq a b}}``, ``not/and/or``,
pipes (``{{.X | json}}``), ``{{- trim -}}``. A row's callable field takes arguments
(``{{.Label "com.x"}}``). ``table …`` prints a header row and aligns the columns.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from berth._sys.units import bytes_size as bytes_size, human_duration as human_duration, human_size as human_size  # noqa: E501 - re-exported for the commands
from berth.cli.berth_common import UsageError

# --- sizes and times -----------------------------------------------------------------------


def ago(unix: float) -> str:
    return human_duration(time.time() - unix) + " ago" if unix else "N/A"


def parse_time(text: str) -> float:
    """RFC 3339 (nanoseconds allowed) to unix seconds; 0 if unparsable or zero."""
    if not text or text.startswith("0001-01-01"):
        return 0.0
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text)
    if not m:
        return 0.0
    zone = m.group(3) or "Z"
    frac = float("0" + m.group(2)) if m.group(2) else 0.0
    try:
        return datetime.fromisoformat(m.group(1) + ("+00:00" if zone == "Z" else zone)).timestamp() + frac
    except ValueError:
        return 0.0


def parse_since(text: str) -> str:
    """``--since/--until``: a duration ago (``10m``, ``1h30m``), RFC 3339 or unix seconds."""
    if not text:
        return ""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return text
    m = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms))+", text)
    if m:
        total = 0.0
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
            total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        return f"{time.time() - total:.9f}"
    stamp = parse_time(text if "T" in text else text + "T00:00:00Z")
    if not stamp:
        raise ValueError(f"invalid time or duration {text!r}")
    return f"{stamp:.9f}"


# --- what inspect and prune print ---------------------------------------------------------


def print_inspected(items: list[Any], fmt: str) -> None:
    """``inspect``'s output: each item through the ``--format`` template, else all as JSON."""
    if not fmt:
        print(json.dumps(items, indent=4))
        return
    try:
        template = Template(fmt)
        for item in items:
            print(template.render(item))
    except TemplateError as e:
        raise UsageError(f"template parsing error: {e}") from None


def print_deleted(title: str, names: list[str]) -> None:
    """A prune's ``Deleted Containers:`` block (nothing if nothing was deleted)."""
    if names:
        print(title + "\n" + "\n".join(names) + "\n")


def print_deleted_images(deleted: list[dict[str, str]]) -> None:
    """An image prune's ``Deleted Images:`` block: ``untagged: …``/``deleted: …`` lines."""
    if deleted:
        print("Deleted Images:")
        for item in deleted:
            for key, value in item.items():
                print(f"{key.lower()}: {value}")
        print()


# --- tables --------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], min_width: int = 10, padding: int = 3) -> str:
    """Go's tabwriter as docker uses it: cells padded to the column's width + 3 (at least
    10), the last column as it is."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + padding, min_width)
    lines = []
    for row in rows:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1] if row else ""]
        lines.append("".join(parts).rstrip() if not row[-1] else "".join(parts))
    return "\n".join(lines) + "\n"


def render_rows(fmt: str, rows: list[dict[str, Any]], headers: dict[str, str]) -> str:
    """``--format`` over rows; ``table`` formats get a header row and aligned columns."""
    if fmt.startswith("table"):
        body = fmt[len("table"):].strip() or "\t".join(f"{{{{.{k}}}}}" for k in headers)
        template = Template(body.replace("\\t", "\t"))
        header_row = _header(body, headers)
        lines = [header_row.split("\t")] + [template.render(row).split("\t") for row in rows]
        return table(lines)
    template = Template(fmt.replace("\\t", "\t").replace("\\n", "\n"))
    return "".join(template.render(row) + "\n" for row in rows)


def _header(body: str, headers: dict[str, str]) -> str:
    def name(m: re.Match[str]) -> str:
        field = m.group(1).strip().lstrip(".").split()[0] if m.group(1).strip() else ""
        return headers.get(field, field.upper())

    return re.sub(r"\{\{-?\s*(.*?)\s*-?\}\}", name, body)


# --- Go templates (a subset) -----------------------------------------------------------------


class TemplateError(Exception):
    pass


def go_str(value: Any) -> str:
    """A value as Go's text/template prints it."""
    if value is None:
        return "<no value>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_inner(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_inner(v) for v in value) + "]"
    return str(value)


def _inner(value: Any) -> str:
    return "<nil>" if value is None else go_str(value)


def _truth(value: Any) -> bool:
    return bool(value) and value != 0


def _printf(fmt: str, *args: Any) -> str:
    out = []
    it = iter(args)
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            verb = fmt[i + 1]
            i += 2
            if verb == "%":
                out.append("%")
            elif verb == "q":
                out.append(json.dumps(go_str(next(it, ""))))
            else:
                out.append(go_str(next(it, "")))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, (list, tuple)):
            value = value[int(key)]
        else:
            raise TemplateError(f"can't index item of type {type(value).__name__}")
    return value


FUNCS: dict[str, Callable[..., Any]] = {
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "index": _index,
    "len": lambda v: len(v) if v is not None else 0,
    "join": lambda v, sep: sep.join(go_str(x) for x in (v or [])),
    "split": lambda v, sep: str(v).split(sep),
    "lower": lambda v: go_str(v).lower(),
    "upper": lambda v: go_str(v).upper(),
    "title": lambda v: go_str(v).title(),
    "printf": _printf,
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "gt": lambda a, b: a > b,
    "not": lambda a: not _truth(a),
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1] if a else None),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1] if a else None),
    "truncate": lambda v, n: go_str(v)[: int(n)],
    "pad": lambda v, left, right: " " * int(left) + go_str(v) + " " * int(right),
}

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\(|\)|\||[^\s()|]+')


class Template:
    def __init__(self, text: str) -> None:
        self.nodes = self._parse(text)

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._exec(self.nodes, data, data, out)
        return "".join(out)

    # parse into a tree: str | ("pipe", tokens) | ("if", tokens, then, else) | ("range", tokens, body, else)
    def _parse(self, text: str) -> list[Any]:
        items: list[tuple[str, str]] = []
        pos = 0
        for m in _ACTION.finditer(text):
            literal = text[pos:m.start()]
            if m.group(1):
                literal = literal.rstrip()
            if items and items[-1][0] == "trim_next":
                items.pop()
                literal = literal.lstrip()
            items.append(("text", literal))
            items.append(("action", m.group(2)))
            if m.group(3):
                items.append(("trim_next", ""))
            pos = m.end()
        tail = text[pos:]
        if items and items[-1][0] == "trim_next":
            items.pop()
            tail = tail.lstrip()
        items.append(("text", tail))
        nodes, rest, end = self._block(items, 0)
        if end is not None:
            raise TemplateError(f"unexpected {{{{{end}}}}}")
        return nodes

    def _block(self, items: list[tuple[str, str]], i: int) -> tuple[list[Any], int, str | None]:
        nodes: list[Any] = []
        while i < len(items):
            kind, value = items[i]
            i += 1
            if kind == "text":
                if value:
                    nodes.append(value)
                continue
            if value.startswith("/*"):
                continue
            word = value.split(None, 1)[0] if value else ""
            if word in ("end", "else"):
                return nodes, i, word
            if word in ("if", "range", "with"):
                tokens = _TOKEN.findall(value[len(word):])
                body, i, stop = self._block(items, i)
                other: list[Any] = []
                if stop == "else":
                    other, i, stop = self._block(items, i)
                if stop != "end":
                    raise TemplateError(f"missing {{{{end}}}} for {{{{{word}}}}}")
                nodes.append((word, tokens, body, other))
                continue
            nodes.append(("pipe", _TOKEN.findall(value)))
        return nodes, i, None

    def _exec(self, nodes: list[Any], dot: Any, root: Any, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
                continue
            kind = node[0]
            if kind == "pipe":
                value = self._pipeline(node[1], dot, root)
                out.append(go_str(value))
            elif kind == "if":
                self._exec(node[2] if _truth(self._pipeline(node[1], dot, root)) else node[3], dot, root, out)
            elif kind == "with":
                value = self._pipeline(node[1], dot, root)
                self._exec(node[2] if _truth(value) else node[3], value if _truth(value) else dot, root, out)
            elif kind == "range":
                value = self._pipeline(node[1], dot, root)
                items = list(value.values()) if isinstance(value, dict) else list(value or [])
                if not items:
                    self._exec(node[3], dot, root, out)
                for item in items:
                    self._exec(node[2], item, root, out)

    def _pipeline(self, tokens: list[str], dot: Any, root: Any) -> Any:
        commands: list[list[str]] = [[]]
        depth = 0
        for tok in tokens:
            if tok == "|" and depth == 0:
                commands.append([])
                continue
            depth += tok == "("
            depth -= tok == ")"
            commands[-1].append(tok)
        value: Any = _NOARG
        for command in commands:
            value = self._command(command, dot, root, value)
        return None if value is _NOARG else value

    def _command(self, tokens: list[str], dot: Any, root: Any, piped: Any) -> Any:
        if not tokens:
            raise TemplateError("empty command")
        args = self._args(tokens[1:], dot, root)
        if piped is not _NOARG:
            args.append(piped)
        head = tokens[0]
        if head in FUNCS:
            try:
                return FUNCS[head](*args)
            except TypeError as e:
                raise TemplateError(f"wrong arguments for {head}: {e}") from None
        value = self._term(head, dot, root)
        if callable(value):
            return value(*args)
        return value

    def _args(self, tokens: list[str], dot: Any, root: Any) -> list[Any]:
        args = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok == "(":
                depth, j = 1, i + 1
                while j < len(tokens) and depth:
                    depth += tokens[j] == "("
                    depth -= tokens[j] == ")"
                    j += 1
                args.append(self._pipeline(tokens[i + 1:j - 1], dot, root))
                i = j
                continue
            args.append(FUNCS[tok]() if tok in FUNCS and tok in ("println",) else self._term(tok, dot, root))
            i += 1
        return args

    def _term(self, tok: str, dot: Any, root: Any) -> Any:
        if tok.startswith('"'):
            return json.loads(tok)
        if tok.startswith("`"):
            return tok[1:-1]
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "nil":
            return None
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if re.fullmatch(r"-?\d+\.\d*", tok):
            return float(tok)
        if tok == ".":
            return dot
        if tok.startswith("$"):
            base, path = root, tok[1:]
        elif tok.startswith("."):
            base, path = dot, tok
        else:
            raise TemplateError(f'function "{tok}" not defined')
        value = base
        for part in [p for p in path.split(".") if p]:
            if isinstance(value, dict):
                if part in value:
                    value = value[part]
                else:
                    match = next((k for k in value if k.lower() == part.lower()), None)
                    value = value.get(match) if match is not None else None
            else:
                attr = getattr(value, part, None)
                value = attr
        return value


_NOARG = object()

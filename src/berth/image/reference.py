"""Image references as Docker writes them, normalized as distribution/reference does.

    parse_reference("busybox")            -> docker.io/library/busybox:latest
    parse_reference("host:5000/a/b:tag")  -> host:5000/a/b:tag
    parse_reference("name@sha256:<hex>")  -> docker.io/library/name@sha256:<hex> (no tag added)
    ref.familiar()                        -> "busybox:latest" (Docker's short form)

Grammar (distribution/reference)::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] path-component ["/" path-component]*
    domain           := host [":" port-number]
    host             := domain-name | "[" IPv6address "]"
    domain-name      := domain-component ["." domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/

The first component is a domain only if it holds a "." or a ":", is "localhost", or has
an uppercase letter; otherwise the name lives on docker.io, where a one-component name
gets "library/" in front. "index.docker.io" is written "docker.io".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.image.digest import parse_digest

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255
TAG_LENGTH_MAX = 128

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]*", re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``docker.io/library/busybox``: the repository, fully qualified."""
        return f"{self.domain}/{self.path}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if there is one, else the tag."""
        if self.digest is not None:
            return self.digest
        return self.tag if self.tag is not None else DEFAULT_TAG

    def __str__(self) -> str:
        return self.name + self._suffix()

    def familiar_name(self) -> str:
        """The repository as Docker prints it: ``busybox``, ``user/app``, ``host:5000/a/b``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        rest = self.path[len(OFFICIAL_REPO_PREFIX):]
        if self.path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in rest:
            return rest
        return self.path

    def familiar(self) -> str:
        """The short form Docker prints: ``busybox:latest``, ``user/app@sha256:...``."""
        return self.familiar_name() + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        _check_tag(tag, tag)
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        parse_digest(digest)
        return Reference(self.domain, self.path, self.tag, digest)

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag is not None else ""
        if self.digest is not None:
            suffix += f"@{self.digest}"
        return suffix


def parse_reference(text: str, *, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalize a reference as ``docker pull`` does.

    A reference with neither tag nor digest gets ``default_tag`` (pass None to keep it
    bare). InvalidArgument, one line naming what is wrong, for a malformed one.
    """
    if not isinstance(text, str) or not text:
        raise InvalidArgument("invalid reference: empty")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidArgument(f"invalid reference {text!r}: contains whitespace")
    if _IDENTIFIER.fullmatch(text):
        raise InvalidArgument(
            f"invalid reference {text!r}: a 64-character hexadecimal string is an image ID, "
            "not a repository name"
        )

    name, at, digest = text.partition("@")
    if at:
        if not digest:
            raise InvalidArgument(f"invalid reference {text!r}: empty digest after '@'")
        try:
            parse_digest(digest)
        except InvalidArgument as e:
            raise InvalidArgument(f"invalid reference {text!r}: {e}") from None

    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1:]
        _check_tag(tag, text)

    domain, path = _split_domain(name, text)
    if path != path.lower():
        raise InvalidArgument(f"invalid reference {text!r}: repository name {path!r} must be lowercase")
    if not _PATH.fullmatch(path):
        raise InvalidArgument(
            f"invalid reference {text!r}: repository name {path!r} must be lowercase letters, "
            "digits and separators (. _ __ -) between them, in components separated by '/'"
        )
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(
            f"invalid reference {text[:80]!r}...: repository name longer than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    if tag is None and not at:
        tag = default_tag
    return Reference(domain, path, tag, digest if at else None)


def validate_repository_path(path: str) -> str:
    """Check a repository path inside a registry (``library/busybox``); returns it."""
    if not isinstance(path, str) or not _PATH.fullmatch(path) or len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(
            f"invalid repository name {path!r}: lowercase letters, digits and separators "
            "(. _ __ -) between them, in components separated by '/'"
        )
    return path


def validate_tag(tag: str) -> str:
    _check_tag(tag, tag)
    return tag


def _split_domain(name: str, text: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or (
        "." not in first and ":" not in first and first != "localhost" and first == first.lower()
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        if not _DOMAIN.fullmatch(first):
            raise InvalidArgument(f"invalid reference {text!r}: invalid registry host {first!r}")
        domain, path = first, rest
    if not path:
        raise InvalidArgument(f"invalid reference {text!r}: empty repository name")
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def _check_tag(tag: str, text: str) -> None:
    if not tag:
        raise InvalidArgument(f"invalid reference {text!r}: empty tag after ':'")
    if len(tag) > TAG_LENGTH_MAX:
        raise InvalidArgument(f"invalid reference {text[:80]!r}: tag longer than {TAG_LENGTH_MAX} characters")
    if not _TAG.fullmatch(tag) or tag[0] in ".-":
        raise InvalidArgument(
            f"invalid reference {text!r}: invalid tag {tag!r} (letters, digits, '_', '.', '-'; "
            "not starting with '.' or '-')"
        )

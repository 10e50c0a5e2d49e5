"""``docker import --change`` instructions applied to a config."""

from __future__ import annotations

import pytest

from berth.errors import InvalidArgument
from berth.image.changes import apply_changes


def test_changes() -> None:
    base = {"Env": ["PATH=/bin", "A=0"], "WorkingDir": "/srv"}
    out = apply_changes(base, [
        "CMD echo hi", 'ENTRYPOINT ["/init", "--x"]', "ENV A=1 B='two words'", "ENV LEGACY some value",
        'LABEL a=b "c d"=e', "EXPOSE 80 53/udp", 'VOLUME ["/data", "/logs"]', "VOLUME /cache",
        "WORKDIR app", "user 1000:1000", "STOPSIGNAL SIGINT", "ONBUILD RUN true",
    ])
    assert out["Cmd"] == ["/bin/sh", "-c", "echo hi"] and out["Entrypoint"] == ["/init", "--x"]
    assert out["Env"] == ["PATH=/bin", "A=1", "B=two words", "LEGACY=some value"]
    assert out["Labels"] == {"a": "b", "c d": "e"}
    assert out["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert out["Volumes"] == {"/data": {}, "/logs": {}, "/cache": {}}
    assert out["WorkingDir"] == "/srv/app" and out["User"] == "1000:1000" and out["StopSignal"] == "SIGINT"
    assert out["OnBuild"] == ["RUN true"]
    assert base == {"Env": ["PATH=/bin", "A=0"], "WorkingDir": "/srv"}       # not modified in place


@pytest.mark.parametrize("bad", ["RUN true", "FROM scratch", "CMD", "EXPOSE 99999", "EXPOSE 80/icmp",
                                 "LABEL novalue", "ENV A=1 junk"])
def test_bad_changes(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        apply_changes({}, [bad])

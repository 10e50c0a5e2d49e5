"""Docker API behaviours docker-py relies on, found by running docker-py's own integration
suite against berthd (scripts/run_docker_py_suite.sh, tests/DOCKER_PY.md), kept here as
fast checks with the docker-py of the test extras: a SIGKILL returns once the container
has stopped, an exec's stream is multiplexed unless the *start* asks for a raw one,
field names match case-insensitively, an exec that cannot start exits 126, the ``none``
log driver, a failed load reported in the stream, an attach replaying logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.support.daemon import Berthd, berthd  # noqa: F401 - fixture

docker = pytest.importorskip("docker")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def client(berthd: Berthd) -> Iterator:  # noqa: F811
    c = docker.DockerClient(base_url=f"unix://{berthd.socket}", version="1.43", timeout=60)
    made: list = []
    c.made = made
    try:
        yield c
    finally:
        for container in made:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        c.close()


def run(client, *args, **kwargs):  # noqa: ANN001, ANN201
    container = client.containers.run(*args, detach=True, **kwargs)
    client.made.append(container)
    return container


def test_kill_returns_once_the_container_has_stopped(client, berthd: Berthd) -> None:  # noqa: ANN001, F811
    container = run(client, berthd.image, "sleep 300")
    container.kill()
    state = client.api.inspect_container(container.id)["State"]
    assert (state["Running"], state["Status"], state["ExitCode"]) == (False, "exited", 137)
    container.remove()  # no 409: it is not running any more


def test_exec_stream_framing_follows_the_start(client, berthd: Berthd) -> None:  # noqa: ANN001, F811
    container = run(client, berthd.image, "cat", stdin_open=True)
    api = client.api
    cmd = ["sh", "-c", "echo out; echo err >&2"]
    tty_exec = api.exec_create(container.id, cmd, tty=True)
    # a terminal, started without Tty: its output comes as stdout frames
    assert api.exec_start(tty_exec, demux=True) == (b"out\r\nerr\r\n", None)
    plain = api.exec_create(container.id, cmd)
    # no terminal, started with Tty: stdout and stderr as one raw stream
    assert sorted(api.exec_start(plain, tty=True).splitlines()) == [b"err", b"out"]
    assert api.exec_start(api.exec_create(container.id, cmd), demux=True) == (b"out\n", b"err\n")


def test_exec_fields_case_insensitive_and_126(client, berthd: Berthd) -> None:  # noqa: ANN001, F811
    container = run(client, berthd.image, "sleep 300")
    api = client.api
    res = api._post_json(api._url("/containers/{0}/exec", container.id),
                         data={"Cmd": ["true"], "detachKeys": "ctrl-p"})
    exec_id = api._result(res, True)["Id"]
    assert api.exec_inspect(exec_id)["DetachKeys"] == "ctrl-p"
    code, output = container.exec_run("no-such-program")
    assert code == 126 and b"no-such-program" in output


def test_none_log_driver(client, berthd: Berthd) -> None:  # noqa: ANN001, F811
    container = run(client, berthd.image, "echo hi", log_config={"type": "none"})
    assert container.wait()["StatusCode"] == 0
    with pytest.raises(docker.errors.APIError) as info:
        container.logs()
    assert info.value.status_code == 501
    assert info.value.explanation == "configured logging driver does not support reading"
    assert client.api.attach(container.id, stream=False, logs=True) == b""
    with pytest.raises(docker.errors.APIError) as info:
        client.containers.create(berthd.image, "true", log_config={"type": "asdf"})
    assert info.value.explanation == "logger: no log driver named 'asdf' is registered"


def test_attach_replays_the_logs(client, berthd: Berthd) -> None:  # noqa: ANN001, F811
    container = run(client, berthd.image, "echo hello")
    client.api.wait(container.id)
    assert client.api.attach(container.id, stream=False, logs=True) == b"hello\n"


def test_failed_load_is_reported_in_the_stream(client) -> None:  # noqa: ANN001
    with pytest.raises(docker.errors.ImageLoadError):
        client.images.load(b"abc")
    assert client.info()["ExperimentalBuild"] is False

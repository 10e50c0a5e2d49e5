"""runc's command-line conventions, as the parser sees them."""

import pytest

from berth.cli.argparse_runc import Flag, parse, parse_duration
from berth.errors import InvalidArgument
from berth.spec.signals import parse_signal

FLAGS = [Flag("bundle", "b", value=True, default=""), Flag("detach", "d"), Flag("env", "e", value=True, repeat=True)]


def test_flag_forms_and_flags_after_the_id() -> None:
    parsed = parse(["--bundle=/b", "ID", "-d", "-e", "A=1", "--env", "B=2"], FLAGS)
    assert parsed.args == ["ID"]
    assert parsed.bundle == "/b" and parsed.detach is True and parsed.env == ["A=1", "B=2"]
    assert parse(["-b", "/x", "--detach=false", "ID"], FLAGS).detach is False


def test_exec_style_stops_at_the_command() -> None:
    parsed = parse(["-d", "ID", "-e", "X=1", "sh", "-c", "echo -e hi"], FLAGS, stop_after=1)
    assert parsed.args == ["ID", "sh", "-c", "echo -e hi"]
    assert parsed.env == ["X=1"]
    assert parse(["ID", "--", "-d"], FLAGS, stop_after=1).args == ["ID", "-d"]


def test_unknown_flag_and_missing_value_are_clear_errors() -> None:
    with pytest.raises(InvalidArgument, match="flag provided but not defined: -nope"):
        parse(["--nope", "ID"], FLAGS)
    with pytest.raises(InvalidArgument, match="flag needs an argument: -bundle"):
        parse(["ID", "--bundle"], FLAGS)


@pytest.mark.parametrize("raw,number", [("9", 9), ("KILL", 9), ("SIGKILL", 9), ("sigterm", 15),
                                        ("hup", 1), ("RTMIN+2", 36), ("SIGRTMAX", 64)])
def test_signals_as_runc_parses_them(raw: str, number: int) -> None:
    assert parse_signal(raw) == number


@pytest.mark.parametrize("raw", ["SIGNOPE", "0", "65", "", "KILLL"])
def test_bad_signals(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_signal(raw)


def test_durations() -> None:
    assert parse_duration("5s") == 5.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("250ms") == pytest.approx(0.25)
    with pytest.raises(InvalidArgument):
        parse_duration("5")

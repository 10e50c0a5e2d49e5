"""The runc events --stats JSON shape and the parsers behind it."""

from __future__ import annotations

import json

import pytest

from berth.runtime.cgroups import _fs, _stats
from berth.runtime.cgroups._v2stats import parse_io_stat


def test_empty_stats_match_runcs_json_for_zero_values() -> None:
    # what Go's encoding/json makes of a zero types.Stats (runc events --stats with nothing to report)
    assert json.dumps(_stats.stats(), separators=(",", ":")) == (
        '{"cpu":{"usage":{"kernel":0,"user":0},"throttling":{}},'
        '"cpuset":{"cpu_exclusive":0,"mem_hardwall":0,"mem_exclusive":0,"memory_migrate":0,'
        '"memory_spread_page":0,"memory_spread_slab":0,"memory_pressure":0,"sched_load_balance":0,'
        '"sched_relax_domain_level":0},'
        '"memory":{"usage":{"limit":0,"failcnt":0},"swap":{"limit":0,"failcnt":0},'
        '"kernel":{"limit":0,"failcnt":0},"kernelTCP":{"limit":0,"failcnt":0}},'
        '"pids":{},"blkio":{},"hugetlb":{},"intel_rdt":{},"network_interfaces":null}'
    )


def test_omitempty_fields() -> None:
    assert _stats.memory_entry(limit=5, usage=0, max_=7, failcnt=0) == {"limit": 5, "max": 7, "failcnt": 0}
    assert _stats.pids(0, 4) == {"limit": 4}
    assert _stats.blkio_entry(0, 0, "", 0) == {}
    assert _stats.hugetlb_entry(usage=3) == {"usage": 3, "failcnt": 0}
    assert list(_stats.cpu(total=1, percpu=[1], percpu_kernel=[0], percpu_user=[1])["usage"]) == \
        ["total", "percpu", "percpu_kernel", "percpu_user", "kernel", "user"]


def test_parse_psi() -> None:
    text = "some avg10=1.25 avg60=0.10 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
    assert _stats.parse_psi(text) == {
        "some": {"avg10": 1.25, "avg60": 0.1, "avg300": 0.0, "total": 42},
        "full": {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 7},
    }
    only_some = _stats.parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n")
    assert only_some is not None and only_some["full"]["total"] == 0
    assert _stats.parse_psi("") is None


def test_parse_blkio_v1() -> None:
    text = "8:0 Read 1282048\n8:0 Write 2195456\n8:16 Total 3\nTotal 3477504\n"
    assert _stats.parse_blkio_v1(text) == [
        {"major": 8, "op": "Read", "value": 1282048},
        {"major": 8, "op": "Write", "value": 2195456},
        {"major": 8, "minor": 16, "op": "Total", "value": 3},
    ]
    assert _stats.parse_blkio_v1("8:0 6792\n") == [{"major": 8, "value": 6792}]
    with pytest.raises(ValueError):
        _stats.parse_blkio_v1("garbage\n")


def test_parse_io_stat() -> None:
    tables = parse_io_stat("259:0 rbytes=10 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    assert tables == {
        "ioServiceBytesRecursive": [{"major": 259, "op": "Read", "value": 10}, {"major": 259, "op": "Write"}],
        "ioServicedRecursive": [{"major": 259, "op": "Read", "value": 1}, {"major": 259, "op": "Write"}],
    }


def test_parse_id_list_and_flat_keyed() -> None:
    assert _stats.parse_id_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert _stats.parse_id_list("\n") == []
    assert _fs.parse_flat_keyed("a 1\nb max\nc -5\nbad\nd x\n") == {"a": 1, "b": (1 << 64) - 1, "c": 0}


def test_hugepage_sizes_names() -> None:
    sizes = _stats.hugepage_sizes()
    assert all(s.endswith(("KB", "MB", "GB")) for s in sizes)

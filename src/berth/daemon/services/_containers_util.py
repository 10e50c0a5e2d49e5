"""Helpers of the containers service: Docker's state and status texts, ``top``'s ps
table, stats in Docker's shape, and generated names."""

from __future__ import annotations

import json
import os
import time

from berth._sys.units import human_duration
from berth.errors import InvalidArgument
from berth.shim.protocol import EXIT_FILE, rfc3339nano

ZERO_TIME = "0001-01-01T00:00:00Z"



def state(status: str) -> dict:
    return {"Status": status, "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False,
            "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "", "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME}


def read_exit(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, EXIT_FILE), "rb") as f:
            data = json.loads(f.read())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def signal_number(raw: str | int) -> int:
    from berth.spec.signals import parse_signal

    try:
        return parse_signal(str(raw))
    except InvalidArgument:
        raise InvalidArgument(f"Invalid signal: {raw}") from None


def parse_time(text: str | None) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    from berth.daemon.logs import parse_time_ns

    try:
        return parse_time_ns(text) / 1e9
    except ValueError:
        return None


def status_text(rec: dict) -> str:
    st = rec["State"]
    now = time.time()
    if st["Status"] == "removing":
        return "Removal In Progress"
    if st["Restarting"]:
        finished = parse_time(st["FinishedAt"]) or now
        return f"Restarting ({st['ExitCode']}) {human_duration(now - finished)} ago"
    if st["Running"]:
        started = parse_time(st["StartedAt"]) or now
        text = f"Up {human_duration(now - started)}"
        return text + " (Paused)" if st["Paused"] else text
    if st["Dead"]:
        return "Dead"
    if st["Status"] == "created" or not rec.get("HasBeenStartedBefore"):
        return "Created"
    finished = parse_time(st["FinishedAt"]) or now
    return f"Exited ({st['ExitCode']}) {human_duration(now - finished)} ago"


def parse_ps(output: str, pids: list[int]) -> dict:
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return {"Titles": [], "Processes": []}
    titles = lines[0].split()
    try:
        pid_index = titles.index("PID")
    except ValueError:
        raise InvalidArgument("Couldn't find PID field in ps output") from None
    wanted = set(pids)
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) <= pid_index:
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError:
            continue
        if pid in wanted:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}


# --- stats in Docker's shape ---------------------------------------------------------------------


def system_cpu_ns() -> int:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu "):
                    ticks = sum(int(v) for v in line.split()[1:8])
                    return ticks * (1_000_000_000 // os.sysconf("SC_CLK_TCK"))
    except OSError:
        pass
    return 0


def mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def empty_cpu() -> dict:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def empty_stats(cid: str, rec: dict) -> dict:
    return {"read": ZERO_TIME, "preread": ZERO_TIME, "pids_stats": {}, "blkio_stats": {
        "io_service_bytes_recursive": None, "io_serviced_recursive": None, "io_queue_recursive": None,
        "io_service_time_recursive": None, "io_wait_time_recursive": None, "io_merged_recursive": None,
        "io_time_recursive": None, "sectors_recursive": None}, "num_procs": 0, "storage_stats": {},
        "cpu_stats": empty_cpu(), "precpu_stats": empty_cpu(), "memory_stats": {}, "name": rec["Name"], "id": cid}


def blkio_entries(entries: list | None) -> list | None:
    if not entries:
        return None
    return [{"major": e.get("major", 0), "minor": e.get("minor", 0), "op": e.get("op", ""), "value": e.get("value", 0)}
            for e in entries]


def docker_stats(cid: str, rec: dict, data: dict) -> dict:
    """runc's ``events --stats`` data as Docker's stats JSON."""
    cpu = data.get("cpu") or {}
    usage = cpu.get("usage") or {}
    throttling = cpu.get("throttling") or {}
    percpu = usage.get("percpu") or []
    memory = data.get("memory") or {}
    mem_usage = memory.get("usage") or {}
    raw = dict(memory.get("raw") or {})
    limit = int(mem_usage.get("limit") or 0)
    total = mem_total()
    if total and (limit == 0 or limit > total):
        limit = total
    pids = data.get("pids") or {}
    blkio = data.get("blkio") or {}
    pids_stats = {"current": int(pids.get("current") or 0)}
    if pids.get("limit"):
        pids_stats["limit"] = int(pids["limit"])
    cpu_stats = {
        "cpu_usage": {"total_usage": int(usage.get("total") or 0), "percpu_usage": percpu or None,
                      "usage_in_kernelmode": int(usage.get("kernel") or 0),
                      "usage_in_usermode": int(usage.get("user") or 0)},
        "system_cpu_usage": system_cpu_ns(), "online_cpus": len(percpu) or os.cpu_count() or 1,
        "throttling_data": {"periods": int(throttling.get("periods") or 0),
                            "throttled_periods": int(throttling.get("throttled_periods") or 0),
                            "throttled_time": int(throttling.get("throttled_time") or 0)},
    }
    memory_stats = {"usage": int(mem_usage.get("usage") or 0), "max_usage": int(mem_usage.get("max") or 0),
                    "stats": raw, "failcnt": int(mem_usage.get("failcnt") or 0), "limit": limit}
    return {
        "read": rfc3339nano(), "preread": ZERO_TIME, "pids_stats": pids_stats,
        "blkio_stats": {"io_service_bytes_recursive": blkio_entries(blkio.get("ioServiceBytesRecursive")),
                        "io_serviced_recursive": blkio_entries(blkio.get("ioServicedRecursive")),
                        "io_queue_recursive": blkio_entries(blkio.get("ioQueueRecursive")),
                        "io_service_time_recursive": blkio_entries(blkio.get("ioServiceTimeRecursive")),
                        "io_wait_time_recursive": blkio_entries(blkio.get("ioWaitTimeRecursive")),
                        "io_merged_recursive": blkio_entries(blkio.get("ioMergedRecursive")),
                        "io_time_recursive": blkio_entries(blkio.get("ioTimeRecursive")),
                        "sectors_recursive": blkio_entries(blkio.get("sectorsRecursive"))},
        "num_procs": 0, "storage_stats": {}, "cpu_stats": cpu_stats, "precpu_stats": empty_cpu(),
        "memory_stats": memory_stats, "name": rec["Name"], "id": cid,
        "networks": {"lo": {"rx_bytes": 0, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0, "tx_bytes": 0,
                            "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0}},
    }


# Docker's names-generator style: adjective_surname
LEFT = ("admiring", "agitated", "amazing", "angry", "awesome", "blissful", "bold", "boring", "brave", "busy",
         "charming", "clever", "compassionate", "competent", "condescending", "confident", "cool", "cranky",
         "crazy", "dazzling", "determined", "distracted", "dreamy", "eager", "ecstatic", "elastic", "elated",
         "elegant", "eloquent", "epic", "exciting", "fervent", "festive", "flamboyant", "focused", "friendly",
         "frosty", "funny", "gallant", "gifted", "goofy", "gracious", "great", "happy", "hardcore", "heuristic",
         "hopeful", "hungry", "infallible", "inspiring", "intelligent", "interesting", "jolly", "jovial", "keen",
         "kind", "laughing", "loving", "lucid", "magical", "modest", "musing", "mystifying", "naughty", "nervous",
         "nice", "nifty", "nostalgic", "objective", "optimistic", "peaceful", "pedantic", "pensive", "practical",
         "priceless", "quirky", "quizzical", "recursing", "relaxed", "reverent", "romantic", "sad", "serene",
         "sharp", "silly", "sleepy", "stoic", "strange", "stupefied", "suspicious", "sweet", "tender", "thirsty",
         "trusting", "unruffled", "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful", "xenodochial",
         "youthful", "zealous", "zen")
RIGHT = ("agnesi", "albattani", "allen", "almeida", "archimedes", "ardinghelli", "aryabhata", "austin", "babbage",
          "banach", "bardeen", "bartik", "bassi", "bell", "bhabha", "blackwell", "bohr", "booth", "borg", "bose",
          "boyd", "brahmagupta", "brattain", "brown", "carson", "chandrasekhar", "clarke", "colden", "cori",
          "cray", "curie", "darwin", "davinci", "dijkstra", "dirac", "driscoll", "dubinsky", "easley", "einstein",
          "elion", "engelbart", "euclid", "euler", "fermat", "fermi", "feynman", "franklin", "galileo", "gauss",
          "goldberg", "goldstine", "goodall", "hamilton", "hawking", "heisenberg", "hermann", "hodgkin", "hoover",
          "hopper", "hugle", "hypatia", "jackson", "jang", "jennings", "johnson", "kalam", "kapitsa", "keller",
          "kepler", "khorana", "kilby", "knuth", "kowalevski", "lalande", "lamarr", "leakey", "leavitt", "lehmann",
          "lewin", "lichterman", "liskov", "lovelace", "lumiere", "mahavira", "mayer", "mccarthy", "mcclintock",
          "meitner", "mendel", "merkle", "minsky", "mirzakhani", "morse", "murdock", "napier", "nash", "newton",
          "nobel", "noether", "pare", "pascal", "pasteur", "payne", "perlman", "pike", "poincare", "ptolemy",
          "raman", "ramanujan", "ride", "ritchie", "roentgen", "rosalind", "saha", "sammet", "shannon", "shaw",
          "shockley", "sinoussi", "snyder", "spence", "stonebraker", "sutherland", "swanson", "swartz", "tesla",
          "thompson", "torvalds", "turing", "varahamihira", "visvesvaraya", "volhard", "wescoff", "wiles",
          "williams", "wilson", "wing", "wozniak", "wright", "yalow", "yonath")


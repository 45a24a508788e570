"""CPU seconds per job, split by process: where a phase's machine time went.

Each system's rounds run alone (phases take turns), so the CPU that
RabbitMQ's and Redis's processes used during a round is that system's too.
Read from /proc (utime + stime of each process and its live descendants, plus
what their reaped children used), so
it costs nothing while the round runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far, with its reaped children's (0 when it is gone).

    The children's share (cutime + cstime) keeps a group's sum from falling
    when a child seen in one snapshot has exited by the next: Redis's
    BGSAVE/AOF-rewrite forks and RabbitMQ's short-lived helpers did that, and
    the table printed negative milliseconds per job.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / TICKS


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def service_pids(name: str) -> list[int]:
    """Processes whose command is exactly ``name`` (beam.smp, redis-server)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def snapshot(groups: dict[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of root pids (with their descendants)."""
    return {
        name: sum(cpu_seconds(p) for root in roots for p in descendants(root))
        for name, roots in groups.items()
    }


def per_job_ms(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """CPU milliseconds per job of each group between two snapshots, and their total."""
    if jobs <= 0:
        return {}
    split = {name: round((after[name] - before[name]) * 1000.0 / jobs, 3) for name in before}
    split["total"] = round(sum(split.values()), 3)
    return split

"""Redis memory per finished job, record and search indexes, with 100,000 jobs.

The jobs go through the same scripts the platform runs (tasks/core/jobstore:
create in batches, start, succeed; so every index a real job gets), in a
Redis database of their own, with two tags each like a client's
(``tenant`` out of 50, ``order`` unique) and a small result. Then:

* ``used_memory`` before and after, over the jobs: what a finished job costs;
* ``MEMORY USAGE`` of a sample of records, and of every index key, summed:
  how that splits between the record and the indexes (``MEMORY USAGE`` of a
  sorted set counts its skiplist and dict);
* the same with tags left out, so the cost of a tag pair is plain.

``python -m bench.job_memory [--jobs N]`` runs it alone; ``make bench`` runs
it as its last phase (10,000 jobs with --quick).
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from bench.harness import Services, log
from tasks.core.jobstore import (
    INDEX_PREFIX,
    JobStore,
    NewRecord,
    redis_client,
    utcnow,
)

JOBS = 100_000
QUICK_JOBS = 10_000
CHUNK = 500
SAMPLE = 500
TENANTS = 50


def _fill(store: JobStore, jobs: int, tagged: bool) -> list[str]:
    """``jobs`` no-op jobs created, started and succeeded through the store's scripts."""
    ids: list[str] = []
    for start in range(0, jobs, CHUNK):
        records = []
        for n in range(start, min(start + CHUNK, jobs)):
            job_id = str(uuid.uuid4())
            fields: dict[str, Any] = {
                "id": job_id,
                "type": "diagnostics.echo",
                "queue": "diagnostics",
                "state": "queued",
                "attempts": 0,
                "created_at": utcnow(),
            }
            if tagged:
                fields["tags"] = {"tenant": f"t{n % TENANTS}", "order": str(n)}
            records.append(NewRecord(fields))
            ids.append(job_id)
        store.create_many(records)
        pipe = store.redis.pipeline(transaction=False)
        chunk = ids[start:]
        for job_id in chunk:
            # The scripts as the worker calls them, pipelined (each still atomic).
            store._start(
                keys=[store.key(job_id)],
                args=[
                    utcnow(),
                    "bench@host",
                    "diagnostics.echo",
                    job_id,
                    "diagnostics",
                    "1",
                    "0",
                    uuid.uuid4().hex,
                ],
                client=pipe,
            )
            store._settle(
                keys=[store.key(job_id)],
                args=[
                    store.finished_ttl_s,
                    job_id,
                    "state",
                    "succeeded",
                    "result",
                    "null",
                    "finished_at",
                    utcnow(),
                    "error",
                    "null",
                ],
                client=pipe,
            )
        pipe.execute()
    return ids


def _index_bytes(store: JobStore) -> tuple[int, int]:
    """(bytes, keys) of every index key, by MEMORY USAGE."""
    total = keys = 0
    for key in store.redis.scan_iter(match=INDEX_PREFIX + "*", count=1000):
        total += int(store.redis.memory_usage(key, samples=0) or 0)
        keys += 1
    return total, keys


def measure(url: str, jobs: int, tagged: bool) -> dict[str, Any]:
    client = redis_client(url, patient=True)
    client.flushdb()
    store = JobStore(client, finished_ttl_s=7 * 24 * 3600)
    before = int(client.info("memory")["used_memory"])
    started = time.monotonic()
    ids = _fill(store, jobs, tagged)
    seconds = time.monotonic() - started
    after = int(client.info("memory")["used_memory"])
    sample = random.sample(ids, min(SAMPLE, len(ids)))
    record = sum(int(client.memory_usage(store.key(i), samples=0) or 0) for i in sample)
    index_bytes, index_keys = _index_bytes(store)
    client.flushdb()
    return {
        "jobs": jobs,
        "tagged": tagged,
        "bytes_per_job": round((after - before) / jobs, 1),
        "record_bytes": round(record / len(sample), 1),
        "index_bytes_per_job": round(index_bytes / jobs, 1),
        "index_keys": index_keys,
        "fill_seconds": round(seconds, 1),
    }


def job_memory_phase(services: Services, jobs: int, figures: dict[str, Any]) -> None:
    """Both measurements into ``figures`` (results.json ``job_memory``)."""
    url = services.database()
    for tagged in (True, False):
        log(f"job memory: {jobs:,} finished jobs{' with two tags' if tagged else ''}")
        figures["tagged" if tagged else "untagged"] = measure(url, jobs, tagged)


def lines(figures: dict[str, Any]) -> list[str]:
    out = []
    for label in ("tagged", "untagged"):
        f = figures.get(label)
        if not f:
            continue
        tags = "two tags" if f["tagged"] else "no tags"
        out.append(
            f"Redis per finished job ({f['jobs']:,} jobs, {tags}): "
            f"{f['bytes_per_job']:,.0f} B used_memory; record {f['record_bytes']:,.0f} B, "
            f"indexes {f['index_bytes_per_job']:,.0f} B ({f['index_keys']:,} index keys)"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.job_memory")
    parser.add_argument("--jobs", type=int, default=JOBS)
    args = parser.parse_args(argv)
    services = Services()
    figures: dict[str, Any] = {}
    try:
        job_memory_phase(services, args.jobs, figures)
    finally:
        services.cleanup()
    print(json.dumps(figures, indent=1))
    print("\n".join(lines(figures)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

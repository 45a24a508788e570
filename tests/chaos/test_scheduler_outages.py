"""Schedules through a RabbitMQ restart and a Redis restart (the chaos platform's own nodes).

Two real ``celery -A tasks beat`` processes fire three 1 s schedules, one per missed
policy, while the broker is stopped for a while and then Redis is. Fires due while a
node was down cannot be confirmed (broker) or recorded (Redis); once it is back they
are handled per policy: "all" fires every one of them late, "last" the newest,
"none" none. Whatever the policy, every due time is accounted for exactly once
(fired or missed), no fire is a second job, and every fired job's effect happens once.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from tasks.core.schedule_times import fire_job_id
from tasks.core.schedules import check_schedule
from tasks.factory import create_celery_app
from tests.integration.helpers import FINAL
from tests.services import wait_until

pytestmark = pytest.mark.integration
POLICIES = ("all", "last", "none")
EFFECTS_KEY = "taskplane:diagnostics:effects"
DOWN_S = 8  # each outage; fires due in it are late (grace 2 s) when it ends


def dues_between(after_ms: int, until_ms: int) -> list[datetime]:
    return [
        datetime.fromtimestamp(s, UTC) for s in range(after_ms // 1000 + 1, until_ms // 1000 + 1)
    ]


def test_fires_due_during_broker_and_redis_outages_follow_policy_none_doubled(chaos) -> None:
    app = create_celery_app(
        "testing",
        overrides={"broker_url": chaos.rabbit.url, "result_backend": chaos.redis_node.url},
        patient_storage=False,
    )
    store = app.schedules
    for schedule_id in store.ids():
        store.delete(schedule_id)
    beats = [chaos.platform.start_beat(f"chaos-beat-{n}") for n in "ab"]
    try:
        for policy in POLICIES:
            schedule, _ = check_schedule(
                app,
                {
                    "id": f"outage-{policy}",
                    "type": "diagnostics.sleep",
                    "payload": {"seconds": 0, "effect": True},
                    "interval_s": 1,
                    "missed": policy,
                },
            )
            assert store.create(schedule)
        time.sleep(4)

        # Each outage from the moment the node is down (its port closed) to the
        # moment it is started again: nothing due in between can be confirmed.
        outages = []
        chaos.rabbit.stop_app()
        down_at = time.time()
        time.sleep(DOWN_S)
        outages.append((down_at, time.time()))
        chaos.rabbit.start_app()
        time.sleep(6)

        chaos.redis_node.stop()
        down_at = time.time()
        time.sleep(DOWN_S)
        outages.append((down_at, time.time()))
        chaos.redis_node.start()
        time.sleep(8)
    finally:
        for process in beats:
            process.stop()
    assert all(process.popen.returncode is not None for process in beats)

    def late(due: datetime) -> bool:
        """Due while a node was down, and more than the grace (2 s) before it came back."""
        return any(down < due.timestamp() < up - 3 for down, up in outages)

    for policy in POLICIES:
        schedule_id = f"outage-{policy}"
        stored = store.get(schedule_id)
        dues = dues_between(
            int(datetime.fromisoformat(stored.created_at).timestamp() * 1000), stored.watermark_ms
        )
        outage_dues = [due for due in dues if late(due)]
        assert len(outage_dues) >= 8, (policy, outages)
        tagged = {
            key.decode().rsplit(":", 1)[1]: json.loads(chaos.store.hget(key, "tags") or "{}")
            for key in chaos.store.scan_iter("taskplane:job:*", count=1000)
        }
        jobs = {job_id for job_id, tags in tagged.items() if tags.get("schedule") == schedule_id}
        fired = [due for due in dues if fire_job_id(schedule_id, due) in jobs]
        # Every due time is accounted for once, and a fire is one job.
        assert stored.counts["fired"] == len(fired), (policy, stored.counts, len(fired))
        assert stored.counts["fired"] + stored.counts["missed"] == len(dues), stored.counts
        # Beyond the watermark: at most the one fire a stopping scheduler created
        # and had no time to record.
        unrecorded = jobs - {fire_job_id(schedule_id, due) for due in fired}
        assert len(unrecorded) <= 1, (policy, unrecorded)
        for job_id in unrecorded:
            due_at = datetime.fromisoformat(tagged[job_id]["due_at"].replace("Z", "+00:00"))
            assert due_at > stored.watermark, (policy, job_id, due_at)
        fired_in_outage = [due for due in outage_dues if due in fired]
        if policy == "all":
            assert fired_in_outage == outage_dues and stored.counts["missed"] == 0
        elif policy == "last":
            # At most the newest late fire of each outage (it may fall just past the window).
            assert len(fired_in_outage) <= 2 and stored.counts["missed"] >= len(outage_dues) - 2
        else:
            assert fired_in_outage == [], fired_in_outage
        wait_until(
            lambda jobs=jobs: all(
                (chaos.store.hget(f"taskplane:job:{job_id}", "state") or b"").decode() in FINAL
                for job_id in jobs
            ),
            60,
            what=f"the fires of {schedule_id} to finish",
        )
        effects = chaos.store.hmget(EFFECTS_KEY, list(jobs))
        assert all(count == b"1" for count in effects), (policy, effects)

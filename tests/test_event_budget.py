"""The event queue is bounded in bytes: a flood of previews nobody polls stays within `event_budget_bytes`,
previews go first (the newest of each job stays), and no lifecycle event is ever lost."""

from __future__ import annotations

import director_link
import pytest
from director_link.testing import ComfySimulator

from .conftest import Server, connect, progress_prompt

LIFECYCLE = {"job_queued", "job_started", "node_started", "node_output", "job_completed"}


def test_the_default_budget_is_64_mib_and_a_tiny_one_is_refused(tmp_path):
    with director_link.Hub(output_dir=str(tmp_path)) as hub:
        events = hub.snapshot()["events"]
        assert events["budget_bytes"] == 64 << 20
        assert events["pending_bytes"] == 0 and events["dropped_bytes"] == 0
    with pytest.raises(ValueError, match="event_budget_bytes"):
        director_link.Hub(output_dir=str(tmp_path), event_budget_bytes=10)


def test_a_preview_flood_stays_within_the_budget_and_every_lifecycle_event_arrives(tmp_path):
    budget = 256 << 10
    with (
        # Steps of 5 ms: at time_scale=0 a loaded machine can finish a whole job before the POST answer is read,
        # and the router drops progress and previews it holds until then (the flood would not reach the queue).
        ComfySimulator(time_scale=1.0, preview_size=512) as sim,
        director_link.Hub(output_dir=str(tmp_path / "out"), event_budget_bytes=budget) as hub,
    ):
        name = connect(hub, Server(sim.url, sim))
        hub.poll(10_000)
        jobs = [hub.submit(name, progress_prompt(steps=120, step_seconds=0.005, preview=True)) for _ in range(3)]
        # Nobody polls while the jobs run: every preview waits in the queue.
        for job in jobs:
            assert job.wait(60)["state"] == "completed"
        stats = hub.snapshot()["events"]
        events = []
        for _ in range(1000):
            got = hub.poll(10_000)
            if not got:
                break
            events.extend(got)

    assert stats["budget_bytes"] == budget
    assert 0 < stats["pending_bytes"] <= budget, stats
    assert stats["previews_coalesced"] > 0, stats
    # Far more preview bytes arrived than the budget holds: the rest was shed, and said so.
    assert stats["coalesced_bytes"] + stats["dropped_bytes"] > budget, stats
    assert stats["coalesced"] >= stats["previews_coalesced"] + stats["progress_coalesced"]
    for job in jobs:
        mine = [e for e in events if e.job == job.id]
        types = [e.type for e in mine]
        assert [e.seq for e in mine] == sorted(e.seq for e in mine)
        assert LIFECYCLE <= set(types), types
        assert [t for t in types if t in ("job_completed", "job_failed", "job_cancelled")] == ["job_completed"]
        assert types[-1] == "job_completed"
        assert types.count("node_started") == 2, types
        # Previews were coalesced, never all lost: the newest of each job is still there.
        previews = [e for e in mine if e.type == "preview"]
        assert previews and all(len(p.data) > 0 for p in previews)
        assert len(previews) < 120

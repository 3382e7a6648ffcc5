"""Pools in the add-on, without Blender: an entry listing several ComfyUI servers becomes ``hub.add_pool``, and the
panel's lines per server come from the pool's part of the snapshot and its servers' own state events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace as E

import pytest
from movie_director import format as fmt
from movie_director import hub_owner as ho
from movie_director import state as st

from .test_hub_owner import FakeHub


class PoolHub(FakeHub):
    def __init__(self):
        super().__init__()
        self.pools = []

    def add_pool(self, name, servers, *, capacity=2, resubmit_running=False, wait_deadline=None):
        self.pools.append((name, list(servers), capacity))
        return name


def owner_with(hub) -> ho.HubOwner:
    owner = ho.HubOwner(factory=lambda **_: hub)
    owner.open("/tmp/unused")
    return owner


def test_an_address_listing_several_servers_is_a_pool():
    assert ho.split_urls(" 127.0.0.1:8188, 127.0.0.1:8189;gpu3:8188  gpu4 ") == [
        "127.0.0.1:8188",
        "127.0.0.1:8189",
        "gpu3:8188",
        "gpu4",
    ]
    assert not ho.ServiceSpec("a", "127.0.0.1:8188").is_pool
    assert ho.ServiceSpec("a", "127.0.0.1:8188,127.0.0.1:8189").is_pool
    assert ho.pool_problem(ho.ServiceSpec("a", "127.0.0.1:8188")) is None
    assert "only ComfyUI" in ho.pool_problem(ho.ServiceSpec("a", "h:1, h:2", kind="wan2gp"))
    assert "without a token" in ho.pool_problem(ho.ServiceSpec("a", "h:1, h:2", token="t"))


def test_sync_adds_a_pool_and_re_adds_it_when_its_servers_or_capacity_change():
    hub, model = PoolHub(), st.ViewModel()
    owner = owner_with(hub)
    pool = ho.ServiceSpec("farm", "127.0.0.1:8188, 127.0.0.1:8189", capacity=3)
    single = ho.ServiceSpec("local", "127.0.0.1:8190", capacity=5)
    changed = owner.sync_services([pool, single], model)
    assert st.SERVICES in changed
    assert hub.pools == [("farm", ["127.0.0.1:8188", "127.0.0.1:8189"], 3)]
    assert hub.added == [("comfyui", "127.0.0.1:8190", "local", None)]
    assert model.services["farm"].is_pool and not model.services["local"].is_pool
    assert sorted(model.services["farm"].pool_servers) == ["farm/127.0.0.1:8188", "farm/127.0.0.1:8189"]

    # Nothing changed: nothing is re-added.
    owner.sync_services([pool, single], model)
    assert len(hub.pools) == 1 and len(hub.added) == 1 and not hub.removed
    # "Jobs per server" means nothing to a single server: changing it leaves that service (and its jobs) alone.
    owner.sync_services([pool, ho.ServiceSpec("local", "127.0.0.1:8190", capacity=9)], model)
    assert not hub.removed and len(hub.added) == 1
    # A third server: the pool is added again with it (a pool is not moved like a single address).
    bigger = ho.ServiceSpec("farm", "127.0.0.1:8188, 127.0.0.1:8189, 127.0.0.1:8191", capacity=3)
    owner.sync_services([bigger, single], model)
    assert hub.removed == ["farm"] and hub.pools[-1] == (
        "farm",
        ["127.0.0.1:8188", "127.0.0.1:8189", "127.0.0.1:8191"],
        3,
    )
    assert len(model.services["farm"].pool_servers) == 3
    # Back to one server: a plain service again, its pool lines gone.
    owner.sync_services([ho.ServiceSpec("farm", "127.0.0.1:8188"), single], model)
    assert hub.removed == ["farm", "farm"] and hub.added[-1] == ("comfyui", "127.0.0.1:8188", "farm", None)
    assert not model.services["farm"].is_pool and not model.services["farm"].pool_servers


@pytest.mark.parametrize(
    "spec, online, why",
    [
        (ho.ServiceSpec("farm", "127.0.0.1:8188, 10.0.0.7:8188"), False, "online access is off"),
        (ho.ServiceSpec("farm", "127.0.0.1:8188, 127.0.0.1:8189", token="secret"), True, "without a token"),
        (ho.ServiceSpec("farm", "127.0.0.1:7860, 127.0.0.1:7861", kind="gradio"), True, "only ComfyUI"),
    ],
)
def test_a_pool_that_cannot_be_used_is_shown_blocked_and_not_added(spec, online, why):
    hub, model = PoolHub(), st.ViewModel()
    owner_with(hub).sync_services([spec], model, online_access=online)
    assert not hub.pools and not hub.added
    assert why in model.services["farm"].blocked


def test_the_hub_refusing_a_pool_is_shown_with_its_reason():
    class Refusing(PoolHub):
        def add_pool(self, name, servers, **_):
            import director_link

            raise director_link.DuplicateServiceError(f"pool {name!r} lists the server twice")

    hub, model = Refusing(), st.ViewModel()
    owner_with(hub).sync_services([ho.ServiceSpec("farm", "127.0.0.1:8188, 127.0.0.1:8188")], model)
    assert "lists the server twice" in model.services["farm"].blocked
    assert model.errors[-1].code == "duplicate_service"


# A pool's part of ``Hub.snapshot()``: three servers, one running a shot, one reconnecting, one of another kind.
POOL_SNAPSHOT = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "pool" / "snapshot.json").read_text())


def test_the_snapshot_gives_each_pool_server_its_line():
    model = st.ViewModel()
    assert st.SERVICES in model.apply_snapshot(POOL_SNAPSHOT)
    assert sorted(model.services) == ["farm"]
    farm = model.services["farm"]
    assert farm.is_pool and farm.pool_state == "busy" and farm.pool_waiting == 2
    lines = [fmt.pool_server_line(s) for s in farm.pool_servers.values()]
    assert lines == [
        "127.0.0.1:8188 · Connected · queue 1 · shot_010 45%",
        "127.0.0.1:8189 · Reconnecting… · connection refused",
        "127.0.0.1:7860 · Connected · abcdef12 queued",
    ]
    assert farm.pool_servers["farm/127.0.0.1:7860"].reason == "answers as gradio"
    assert fmt.pool_line(farm.pool_state, farm.pool_waiting, len(farm.pool_servers)) == (
        "Pool of 3 · every server busy · 2 waiting"
    )
    assert farm.pool_problems == ["127.0.0.1:7860 answers as a Gradio app, not ComfyUI"]
    # The same snapshot again changes nothing (no redraw).
    assert st.SERVICES not in model.apply_snapshot(POOL_SNAPSHOT)


def test_a_pool_servers_own_events_update_its_line_not_a_new_service():
    model = st.ViewModel()
    model.set_pool("farm", ["127.0.0.1:8188", "http://127.0.0.1:8189/"])
    assert sorted(model.services["farm"].pool_servers) == ["farm/127.0.0.1:8188", "farm/127.0.0.1:8189"]
    changed = model.apply(
        [
            E(type="service_state_changed", service="farm/127.0.0.1:8189", previous="connecting",
              state="reconnecting", reason="connection refused", seq=1),
            E(type="queue_changed", service="farm/127.0.0.1:8188", queue_remaining=4, seq=2),
        ]
    )  # fmt: skip
    assert st.SERVICES in changed and st.ERRORS in changed
    assert sorted(model.services) == ["farm"]
    servers = model.services["farm"].pool_servers
    assert servers["farm/127.0.0.1:8189"].state == "reconnecting"
    assert servers["farm/127.0.0.1:8189"].reason == "connection refused"
    assert servers["farm/127.0.0.1:8188"].queue_remaining == 4
    # A name with a slash that is not a pool's stays a service of its own.
    model.apply([E(type="service_state_changed", service="a/b", previous=None, state="connected", reason=None)])
    assert "a/b" in model.services


def _keys(value, prefix=""):
    """Every key path of a JSON value (list items merged), e.g. ``pools[].servers[].jobs[].tag``."""
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(prefix + k)
            out |= _keys(v, prefix + k + ".")
    elif isinstance(value, list):
        for item in value:
            out |= _keys(item, prefix.rstrip(".") + "[].")
    return out


def test_a_real_pool_shows_which_shot_runs_on_which_server(tmp_path):
    """Two simulators as one pool entry: the hub's pool, its servers' lines and the shot running on one of them."""
    from director_link.testing import ComfySimulator

    with ComfySimulator(time_scale=0.1) as a, ComfySimulator(time_scale=0.1) as b:
        owner = ho.HubOwner()
        hub = owner.open(str(tmp_path / "out"), heartbeat=1.0)
        try:
            model = st.ViewModel()
            owner.sync_services([ho.ServiceSpec("farm", f"{a.url}, {b.url}", capacity=1)], model)
            slow = {"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 30.0, "nonce": time.time_ns() % 10**9}}}
            job = hub.submit("farm", slow, tag="shot_010")
            model.track(job.id, "farm", "shot_010")
            deadline, now = time.monotonic() + 30, 0.0
            lines: list[str] = []
            while time.monotonic() < deadline:
                now += 5.0  # every tick takes a snapshot
                ho.tick(hub, model, ho.Pacing(), now=now)
                farm = model.services["farm"]
                lines = [fmt.pool_server_line(s) for s in farm.pool_servers.values()]
                connected = [s for s in farm.pool_servers.values() if s.state == "connected"]
                if len(connected) == 2 and any("shot_010" in line for line in lines):
                    break
                hub.wait_for_events(0.1)
            assert sorted(model.services) == ["farm"], "a pool's servers are lines of the pool, not services"
            assert len(farm.pool_servers) == 2 and len(connected) == 2, lines
            running = [line for line in lines if "shot_010" in line]
            assert len(running) == 1, lines  # on exactly one server
            # The fixture the pure tests use has the keys a real pool's snapshot has.
            fixture = _keys(POOL_SNAPSHOT["pools"])
            real = _keys(hub.snapshot()["pools"])
            assert fixture - {"[].servers[].wrong_kind"} <= real, fixture - real
            hub.cancel(job.id)
        finally:
            owner.close()

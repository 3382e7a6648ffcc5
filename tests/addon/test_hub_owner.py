"""The timer step and the hub's lifecycle, without Blender: a stand-in hub for pacing, the real Hub for threads."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace as E

import director_link
import pytest
from movie_director import hub_owner as ho
from movie_director import state as st


class FakeHub:
    def __init__(self, events=()):
        self.queue = list(events)
        self.closed = False
        self.added = []
        self.removed = []
        self.moved = []
        self.snapshots = 0
        self.probed = None

    def poll(self, max_events=256):
        out, self.queue = self.queue[:max_events], self.queue[max_events:]
        return out

    def snapshot(self):
        self.snapshots += 1
        return {"services": [], "jobs": []}

    def add_service(self, kind, url, name=None, token=None):
        if "bad" in url:
            raise director_link.InvalidUrlError(f"cannot use {url!r}")
        self.added.append((kind, url, name, token))
        return name

    def remove_service(self, name):
        self.removed.append(name)

    def set_service_url(self, name, url):
        if "bad" in url:
            raise director_link.InvalidUrlError(f"cannot use {url!r}")
        self.moved.append((name, url))
        return name

    def probe(self, urls, timeout):
        self.probed = (list(urls), timeout)
        return [{"url": u, "kind": "none", "summary": "nothing answers"} for u in urls]

    def close(self):
        self.closed = True


def progress(i):
    return E(type="progress", job="j", node_id="1", value=i, max=1000, percentage=i / 10, eta_seconds=1.0, seq=i)


def test_loopback_detection():
    for url in ("127.0.0.1:8188", "http://localhost:8188/", "http://[::1]:8188", "127.5.5.5", "https://a.localhost"):
        assert ho.is_loopback(url), url
    for url in ("10.0.0.5:8188", "https://comfy.example.com", "http://192.168.1.2:8188", "", "http://[bad"):
        assert not ho.is_loopback(url), url


def test_tick_drains_everything_and_reports_areas():
    hub = FakeHub([progress(i) for i in range(1000)])
    model = st.ViewModel()
    seen = []
    pacing = ho.Pacing()
    interval = ho.tick(hub, model, pacing, redraw=seen.append, now=100.0)
    assert hub.queue == [] and model.events_applied == 1000
    assert seen == [{st.JOBS}]
    assert interval == pacing.active
    assert model.jobs["j"].progress_value == 999


def test_tick_leaves_the_rest_of_a_flood_for_the_next_tick():
    total = ho.POLL_BATCH * ho.MAX_BATCHES_PER_TICK + 10
    hub = FakeHub([progress(i % 1000) for i in range(total)])
    model = st.ViewModel()
    assert ho.tick(hub, model, ho.Pacing(), now=0.0) == 0.0  # more waiting: come back at once
    # At most MAX_BATCHES_PER_TICK batches per tick (fewer when the time budget runs out on a busy machine).
    assert 10 <= len(hub.queue) < total
    for _ in range(ho.MAX_BATCHES_PER_TICK + 1):
        before = len(hub.queue)
        ho.tick(hub, model, ho.Pacing(), now=0.0)
        assert before - len(hub.queue) <= ho.POLL_BATCH * ho.MAX_BATCHES_PER_TICK
        if not hub.queue:
            break
    assert hub.queue == []


def test_idle_back_off_and_snapshot_cadence():
    hub = FakeHub()
    model = st.ViewModel()
    pacing = ho.Pacing()
    intervals = [ho.tick(hub, model, pacing, now=float(i)) for i in range(20)]
    assert intervals == sorted(intervals) and intervals[-1] == pacing.idle_max
    assert hub.snapshots == 10  # every 2 s of the 20 simulated seconds
    model.track("j", "s")  # a running job caps the back-off
    assert ho.tick(hub, model, pacing, now=100.0) == pacing.busy
    hub.queue.append(progress(1))
    assert ho.tick(hub, model, pacing, now=100.1) == pacing.active


def test_tick_on_a_closed_or_missing_hub():
    hub = FakeHub()
    hub.closed = True
    assert ho.tick(hub, st.ViewModel()) == ho.Pacing().idle_max
    assert ho.tick(None, st.ViewModel()) == ho.Pacing().idle_max


def test_sync_services_adds_changes_removes_and_blocks():
    owner = ho.HubOwner(factory=lambda **kw: FakeHub())
    hub = owner.open("/tmp/out")
    model = st.ViewModel()
    specs = [
        ho.ServiceSpec("local", "127.0.0.1:8188", token="t1"),
        ho.ServiceSpec("farm", "http://10.1.2.3:8188"),
        ho.ServiceSpec("off", "127.0.0.1:9999", enabled=False),
        ho.ServiceSpec("broken", "http://127.0.0.1:bad"),
    ]
    changed = owner.sync_services(specs, model, online_access=False)
    assert st.SERVICES in changed and st.ERRORS in changed
    assert hub.added == [("comfyui", "127.0.0.1:8188", "local", "t1")]
    assert "online access" in model.services["farm"].blocked
    assert "cannot use" in model.services["broken"].blocked
    assert "off" not in model.services
    assert owner.secrets() == ["t1"]
    # Online now: the farm is added; unchanged "local" is left alone.
    owner.sync_services(specs, model, online_access=True)
    assert hub.added[-1] == ("comfyui", "http://10.1.2.3:8188", "farm", None) and hub.removed == []
    assert model.services["farm"].blocked is None
    # A changed URL moves the service (its unsent jobs follow it); a removed entry leaves hub and panel.
    added = len(hub.added)
    owner.sync_services([ho.ServiceSpec("local", "127.0.0.1:8189", token="t1")], model, online_access=True)
    assert hub.moved == [("local", "127.0.0.1:8189")] and hub.removed == ["farm"] and len(hub.added) == added
    assert set(model.services) == {"local"} and owner.services()["local"].url == "127.0.0.1:8189"
    # A bad address loses nothing: the service stays at its old address, blocked with the reason.
    owner.sync_services([ho.ServiceSpec("local", "http://bad:x", token="t1")], model, online_access=True)
    assert hub.removed == ["farm"] and owner.services()["local"].url == "127.0.0.1:8189"
    assert "cannot use" in model.services["local"].blocked
    # Another token is another service: removed and added again.
    owner.sync_services([ho.ServiceSpec("local", "127.0.0.1:8189", token="t2")], model, online_access=True)
    assert hub.removed == ["farm", "local"] and hub.added[-1] == ("comfyui", "127.0.0.1:8189", "local", "t2")
    owner.close()
    assert hub.closed and not owner.is_open
    owner.close()  # idempotent


def test_discovery_runs_off_the_main_thread_and_lands_in_the_model():
    hub = FakeHub()
    model = st.ViewModel()
    d = ho.Discovery()
    assert d.start(hub, ["127.0.0.1:8188"], 0.5)
    d.join(5)
    changed = d.collect(model)
    assert st.SERVICES in changed
    assert model.discovered == [{"url": "127.0.0.1:8188", "kind": "none", "summary": "nothing answers"}]
    assert hub.probed == (["127.0.0.1:8188"], 0.5)
    assert d.collect(model) == set()


def thread_count():
    return len(os.listdir("/proc/self/task"))


def settled_thread_count(timeout=5.0, quiet=0.5):
    """The thread count once it has not changed for ``quiet`` seconds (earlier tests' threads take a moment)."""
    deadline = time.monotonic() + timeout
    count, since = thread_count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = thread_count()
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return count


def test_real_hub_open_tick_close_leaves_no_thread(tmp_path):
    before = settled_thread_count()
    for _ in range(5):
        owner = ho.HubOwner()
        hub = owner.open(str(tmp_path / "out"), heartbeat=1.0)
        model = st.ViewModel()
        owner.sync_services([ho.ServiceSpec("nobody", "127.0.0.1:9")], model)
        ho.tick(hub, model, ho.Pacing(), now=0.0)
        owner.close()
    deadline = time.monotonic() + 5
    while thread_count() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert thread_count() == before


def test_correcting_a_wrong_address_sends_the_jobs_that_waited(tmp_path):
    """Found in Blender: a job submitted while the address was wrong waited forever after the address was fixed."""
    from director_link.testing import ComfySimulator

    with ComfySimulator(time_scale=0.1) as sim:
        owner = ho.HubOwner()
        hub = owner.open(str(tmp_path / "out"), heartbeat=1.0)
        try:
            model = st.ViewModel()
            owner.sync_services([ho.ServiceSpec("sim", "127.0.0.1:9")], model)
            job = hub.submit("sim", {"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 0.1, "nonce": 3}}})
            model.track(job.id, "sim")
            ho.tick(hub, model, ho.Pacing(), now=0.0)
            assert not model.jobs[job.id].posted and model.take_posted() == []
            owner.sync_services([ho.ServiceSpec("sim", sim.url)], model)
            assert owner.services()["sim"].url == sim.url and hub.services() == ["sim"]
            job.wait(timeout=30)
            assert job.state == "completed"
            ho.tick(hub, model, ho.Pacing(), now=1.0)
            # The server confirmed it: the .blend's record is marked, so a reopen never calls it "never sent".
            assert model.jobs[job.id].posted and model.take_posted() == [job.id]
        finally:
            owner.close()


@pytest.mark.parametrize("pending", [0, 1000])
def test_real_hub_tick_takes_every_pending_event_without_waiting(tmp_path, pending):
    """Not a benchmark (bench/bench_addon.py times a tick): ``pending`` jobs wait for a server that is not there;
    ticks take their events into the model in bounded batches (asking to come back at once while more wait) and
    never wait for the server (it never answers, so a tick that waited would not return)."""
    owner = ho.HubOwner()
    hub = owner.open(str(tmp_path / "out"))
    try:
        model = st.ViewModel()
        owner.sync_services([ho.ServiceSpec("nobody", "127.0.0.1:9")], model)
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
        ids = set()
        for _ in range(pending):
            job = hub.submit("nobody", prompt)
            model.track(job.id, "nobody")
            ids.add(job.id)
        pacing = ho.Pacing(snapshot_every=1e9)
        ticks, intervals = 0, []
        for _ in range(200):
            intervals.append(ho.tick(hub, model, pacing, now=1.0))
            ticks += 1
            if all(model.jobs[j].state == "queued" for j in ids) and intervals[-1] > 0:
                break
            hub.wait_for_events(0.05)
        assert len(model.jobs) == pending
        assert all(model.jobs[j].state == "queued" and model.jobs[j].pending_connection for j in ids)
        assert intervals[-1] > 0, "once drained, the timer backs off"
        if pending:
            # 1000 submits make more than one batch of events: the first tick cannot have been idle.
            assert intervals[0] < pacing.idle_max
    finally:
        owner.close()

"""What the add-on holds while enabled (the hub's owner, the view-model, the tick pacing) and the one slot that holds
it. Its own module so that ``preferences`` (whose update callbacks ask for a sync) and ``bridge`` (which fills the
slot and runs the timer) both import it instead of each other."""

from __future__ import annotations

from . import hub_owner, media
from . import state as st


class Runtime:
    """Everything the add-on holds while enabled."""

    def __init__(self) -> None:
        self.owner = hub_owner.HubOwner()
        self.model = st.ViewModel()
        self.pacing = hub_owner.Pacing()
        self.needs_sync = True
        self.preview_seq = -1
        self.preview_loaded_at = 0.0
        self.preview_icon = 0
        self.ticks = 0
        self.redraws: dict[str, int] = {}
        self.last_tick_error: str | None = None
        self.started_discovery = False
        # Shots waiting to be sent (Generate marks them; the timer sends a few per tick, see shotlist.send_waiting).
        self.batch_pending = False
        # Set when a reopened .blend has shots still waiting: they are offered to continue, not sent by themselves.
        self.batch_paused = False
        # Gradio setup calls (RVC's voice load) per (service, call): their Job; shots of that service wait for it.
        self.gradio_setups: dict[tuple[str, str], object] = {}
        self.workflows = None  # shotlist.Prepared, made on first use (workflows resolved once per file and server)
        self.converter = media.Converter()  # animated results split off Blender's thread before they land


_current: Runtime | None = None


def get() -> Runtime | None:
    return _current


def replace(rt: Runtime | None) -> Runtime | None:
    """Puts ``rt`` in the slot (``None`` empties it); returns what was there."""
    global _current
    old, _current = _current, rt
    return old


def current_hub():
    return _current.owner.hub if _current is not None else None


def current_model() -> st.ViewModel | None:
    return _current.model if _current is not None else None


def request_sync() -> None:
    """Preferences changed: the next tick makes the hub match them (and comes soon)."""
    if _current is not None:
        _current.needs_sync = True
        _current.pacing.interval = _current.pacing.active

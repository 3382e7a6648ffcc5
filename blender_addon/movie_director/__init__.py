"""Movie Director: generate shots on your ComfyUI servers from Blender, watch progress, land results on the timeline.

All network work happens in the native ``director_link.Hub`` (its own threads); Blender's UI thread only drains
``Hub.poll()`` from one timer and draws from a pure-Python view-model, so nothing here ever waits on the network.

Scripting console::

    import movie_director             # legacy add-on; as an extension: import bl_ext.user_default.movie_director
    hub = movie_director.hub()        # the Hub the add-on uses (a director_link.Hub); help(hub) documents it
    hub.snapshot()["services"]

Importing this package does not import ``bpy``: the pure-Python modules (``state``, ``shots``, ``params``,
``placement``, ``takes``, ``media``, ``redact``, ``format``, ``hub_owner``) are tested without Blender.
"""

from __future__ import annotations

import os
import sys

bl_info = {
    "name": "Movie Director",
    "author": "Director Link contributors",
    "version": (0, 1, 0),
    "blender": (3, 6, 0),
    "location": "3D View / Sequencer › Sidebar › Director",
    "description": "Generate shots on ComfyUI servers, watch progress and import results into the VSE",
    "category": "Sequencer",
    "support": "COMMUNITY",
}

# Legacy (Blender 3.6–4.1) installs carry the native module unpacked in ./vendor (see build.py); a Blender 4.2+
# extension gets it from the wheel Blender installs. Either way ``import director_link`` must work.
_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")


def _ensure_native() -> None:
    try:
        import director_link  # noqa: F401
    except ImportError:
        if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
            sys.path.insert(0, _VENDOR)
        import director_link  # noqa: F401


def hub():
    """The ``director_link.Hub`` this add-on uses (None while the add-on is disabled).

    Use it from Blender's Python console or scripts: ``hub().submit(...)``, ``hub().snapshot()``. Do not close it:
    disabling the add-on does that.
    """
    from . import bridge

    return bridge.current_hub()


def view_model():
    """The add-on's view-model (``state.ViewModel``): services, jobs, preview and errors as the panels show them."""
    from . import bridge

    return bridge.current_model()


_ALIASED = False


def register() -> None:
    global _ALIASED
    _ensure_native()
    from . import bridge, operators, panels, preferences, props

    preferences.register()
    props.register()
    operators.register()
    panels.register()
    bridge.start()
    # As an extension this package is ``bl_ext.<repo>.movie_director``; make ``import movie_director`` work too.
    if __name__ != "movie_director" and "movie_director" not in sys.modules:
        sys.modules["movie_director"] = sys.modules[__name__]
        _ALIASED = True


def unregister() -> None:
    global _ALIASED
    from . import bridge, operators, panels, preferences, props

    bridge.stop()
    panels.unregister()
    operators.unregister()
    props.unregister()
    preferences.unregister()
    if _ALIASED and sys.modules.get("movie_director") is sys.modules.get(__name__):
        del sys.modules["movie_director"]
    _ALIASED = False

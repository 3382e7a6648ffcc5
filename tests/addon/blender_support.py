"""Helpers for the headless Blender tests: hand-stepped timers, a recording layout for panel ``draw`` calls."""

from __future__ import annotations

import os
import time

import bpy

ADDON = "movie_director"


class ManualTimers:
    """Stands in for ``bpy.app.timers`` (timers never fire in module mode): tests step the callbacks by hand."""

    def __init__(self) -> None:
        self.callbacks: dict = {}
        self.persistent: dict = {}

    def register(self, function, first_interval=0.0, persistent=False):
        self.callbacks[function] = first_interval
        self.persistent[function] = persistent

    def unregister(self, function):
        if function not in self.callbacks:
            raise ValueError("Error: function is not registered")
        del self.callbacks[function]
        self.persistent.pop(function, None)

    def is_registered(self, function):
        return function in self.callbacks

    def step(self) -> float:
        """Runs every registered callback once; returns the smallest next interval."""
        shortest = 1.0
        for function in list(self.callbacks):
            interval = function()
            if interval is None:
                self.callbacks.pop(function, None)
            else:
                self.callbacks[function] = interval
                shortest = min(shortest, interval)
        return shortest

    def run_until(self, predicate, timeout: float = 20.0, what: str = "condition"):
        """Steps the timer (sleeping what it asks, at most 50 ms) until ``predicate()`` is truthy; bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            interval = self.step()
            result = predicate()
            if result:
                return result
            time.sleep(min(max(interval, 0.001), 0.05))
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def settled_thread_count(timeout: float = 5.0, quiet: float = 0.5) -> int:
    """The thread count once it has not changed for ``quiet`` seconds (threads of closed hubs take a moment)."""
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


# ---- a recording stand-in for UILayout --------------------------------------------------------------------------


def _enum_items(function: str, parameter: str) -> set[str]:
    fn = bpy.types.UILayout.bl_rna.functions[function]
    return {item.identifier for item in fn.parameters[parameter].enum_items}


ICONS = _enum_items("label", "icon")


class RecordedOperator:
    """What ``layout.operator()`` returns: only the operator's own properties may be set."""

    def __init__(self, idname: str, names: set[str], log: list) -> None:
        object.__setattr__(self, "_idname", idname)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_log", log)

    def __setattr__(self, name, value):
        if name not in self._names:
            raise AssertionError(f"{self._idname} has no property {name!r}")
        self._log.append(("set", (self._idname, name, value), {}))


class RecordingLayout:
    """Accepts the UILayout calls the panels make and checks every property, operator and icon name exists."""

    _ATTRS = {
        "enabled",
        "active",
        "alert",
        "scale_x",
        "scale_y",
        "use_property_split",
        "use_property_decorate",
        "alignment",
        "emboss",
        "operator_context",
    }

    def __init__(self, log: list | None = None) -> None:
        object.__setattr__(self, "log", [] if log is None else log)

    def __setattr__(self, name, value):
        if name not in self._ATTRS:
            raise AssertionError(f"UILayout has no attribute {name!r}")
        object.__setattr__(self, name, value)

    def _child(self, kind, *args, **kwargs):
        self.log.append((kind, args, kwargs))
        return RecordingLayout(self.log)

    def row(self, align=False, heading="", **kw):
        return self._child("row")

    def column(self, align=False, heading="", **kw):
        return self._child("column")

    def box(self):
        return self._child("box")

    def split(self, factor=0.0, align=False):
        return self._child("split")

    def column_flow(self, columns=0, align=False):
        return self._child("column_flow")

    def grid_flow(self, **kw):
        return self._child("grid_flow")

    def separator(self, factor=1.0, **kw):
        self.log.append(("separator", (), {}))

    def _icon(self, icon):
        if icon not in ICONS:
            raise AssertionError(f"unknown icon {icon!r}")

    def label(self, text="", icon="NONE", **kw):
        self._icon(icon)
        if not isinstance(text, str):
            raise AssertionError(f"label text must be a string, got {text!r}")
        self.log.append(("label", (text,), {"icon": icon}))

    def prop(self, data, property, text=None, icon="NONE", **kw):
        self._icon(icon)
        if property not in data.bl_rna.properties:
            raise AssertionError(f"{data.bl_rna.identifier} has no property {property!r}")
        self.log.append(("prop", (data.bl_rna.identifier, property), {}))

    def prop_search(self, data, property, search_data, search_property, text=None, icon="NONE", **kw):
        self._icon(icon)
        if property not in data.bl_rna.properties:
            raise AssertionError(f"{data.bl_rna.identifier} has no property {property!r}")
        if search_property not in search_data.bl_rna.properties:
            raise AssertionError(f"{search_data.bl_rna.identifier} has no property {search_property!r}")
        self.log.append(("prop_search", (property, search_property), {}))

    def operator(self, operator, text=None, icon="NONE", **kw):
        self._icon(icon)
        module, _, name = operator.partition(".")
        op = getattr(getattr(bpy.ops, module), name)
        try:
            rna = op.get_rna_type()
        except KeyError as exc:
            raise AssertionError(f"no operator {operator!r}") from exc
        self.log.append(("operator", (operator,), {"text": text}))
        return RecordedOperator(operator, {p.identifier for p in rna.properties}, self.log)

    def progress(self, factor=0.0, type="BAR", text=""):
        if not 0.0 <= factor <= 1.0:
            raise AssertionError(f"progress factor {factor} out of range")
        self.log.append(("progress", (factor, text), {}))

    def template_list(self, listtype_name, list_id, dataptr, propname, active_dataptr, active_propname, **kw):
        """Draws every item with the registered UIList's ``draw_item`` (into this recording)."""
        cls = getattr(bpy.types, listtype_name, None)
        if cls is None:
            raise AssertionError(f"no UIList {listtype_name!r}")
        if propname not in dataptr.bl_rna.properties or active_propname not in active_dataptr.bl_rna.properties:
            raise AssertionError(f"template_list: no {propname!r} / {active_propname!r}")
        self.log.append(("template_list", (listtype_name,), {}))
        for index, item in enumerate(getattr(dataptr, propname)):
            cls.draw_item(
                None, bpy.context, RecordingLayout(self.log), dataptr, item, 0, active_dataptr, active_propname, index
            )

    def template_icon(self, icon_value=0, scale=1.0):
        self.log.append(("template_icon", (icon_value,), {}))

    # ---- reading back ----
    def texts(self) -> list[str]:
        out = []
        for kind, args, kwargs in self.log:
            if kind == "label":
                out.append(args[0])
            elif kind == "progress":
                out.append(args[1])
            elif kind == "operator" and kwargs.get("text"):
                out.append(kwargs["text"])
        return out

    def operators(self) -> list[str]:
        return [args[0] for kind, args, _ in self.log if kind == "operator"]


class FakePanel:
    def __init__(self) -> None:
        self.layout = RecordingLayout()


def draw_all_panels(context) -> dict[str, RecordingLayout]:
    """Runs every registered panel's ``draw`` against a recording layout; returns the layouts by panel id."""
    from movie_director import panels

    out = {}
    for cls in panels.classes:
        if not hasattr(cls, "bl_space_type"):
            continue  # a UIList: drawn through template_list
        fake = FakePanel()
        cls.draw(fake, context)
        out[cls.bl_idname] = fake.layout
    return out

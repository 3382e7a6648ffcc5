"""Event classes returned by ``Hub.poll()``. All derive from ``Event`` (``seq``, ``time``, ``type``, ``job``,
``is_terminal``, ``to_dict()``). Every job ends with exactly one ``JobCompleted``, ``JobFailed`` or
``JobCancelled``.
"""

from ._native import (
    Event,
    JobAssigned,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobQueued,
    JobStarted,
    NodeOutput,
    NodeStarted,
    NodeText,
    Preview,
    Progress,
    QueueChanged,
    ServiceDiscovered,
    ServiceStateChanged,
    TextDelta,
)

__all__ = [
    "Event",
    "JobAssigned",
    "JobCancelled",
    "JobCompleted",
    "JobFailed",
    "JobQueued",
    "JobStarted",
    "NodeOutput",
    "NodeStarted",
    "NodeText",
    "Preview",
    "Progress",
    "QueueChanged",
    "ServiceDiscovered",
    "ServiceStateChanged",
    "TextDelta",
]

"""Director Link: the native link from Blender Movie Director to local AI servers.

    >>> import director_link
    >>> with director_link.Hub() as hub:                                   # doctest: +SKIP
    ...     hub.add_service("comfyui", "127.0.0.1:8188")
    ...     job = hub.submit("comfyui", "workflows/sd_basic.json", params={"6.text": "a red fox"})
    ...     for event in hub.poll():                                       # never blocks
    ...         print(event)
    ...     print(job.wait(timeout=600)["outputs"])

``Hub`` owns its background threads; ``poll()`` never waits on the network; ``Job.wait()`` releases the GIL.
Event classes live in ``director_link.events``; exceptions in ``director_link.errors`` (also exported here).
The ComfyUI simulator for tests lives in ``director_link.testing``.
"""

from __future__ import annotations

import atexit

from . import errors, events, workflows
from ._native import GradioCall, Hub, Job, StudioServer, Workflow, __version__, _close_all
from .errors import (
    DirectorLinkError,
    DuplicateServiceError,
    HubClosed,
    InvalidUrlError,
    JobCancelled,
    JobFailed,
    OutputError,
    ServiceError,
    Timeout,
    UnknownJobError,
    UnknownServiceError,
    WorkflowError,
)
from .events import Event
from .gradio import gradio_file
from .studio import serve

# Background threads must be stopped before the interpreter finalizes.
atexit.register(_close_all)

__all__ = [
    "DirectorLinkError",
    "DuplicateServiceError",
    "Event",
    "GradioCall",
    "Hub",
    "HubClosed",
    "InvalidUrlError",
    "Job",
    "JobCancelled",
    "JobFailed",
    "OutputError",
    "ServiceError",
    "StudioServer",
    "Timeout",
    "UnknownJobError",
    "UnknownServiceError",
    "Workflow",
    "WorkflowError",
    "__version__",
    "errors",
    "events",
    "gradio_file",
    "serve",
    "workflows",
]

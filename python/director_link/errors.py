"""Exceptions raised by Director Link.

Every exception has a stable snake_case ``code`` to key on; messages say what was wrong and what to do, and may
improve between versions.
"""

from __future__ import annotations

from typing import Any


class DirectorLinkError(Exception):
    """Base of every Director Link error.

    ``code`` is stable; ``message`` says what was wrong and what to do; ``details`` (also attributes) hold the
    structured facts, e.g. ``status`` for a server's HTTP answer. ``causes`` lists the texts of the underlying
    errors, outermost first (e.g. ``["error sending request", …, "Connection refused (os error 111)"]``), and
    ``__cause__`` is that chain as exceptions (an ``OSError`` subclass for an OS error, else `ErrorCause`).
    """

    code: str = "director_link_error"

    def __init__(
        self, message: str = "", code: str | None = None, *, causes: list[str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.causes: list[str] = list(causes or [])
        self.details = details
        for key, value in details.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


class ErrorCause(Exception):
    """An underlying error of a Director Link error, by its text (the HTTP, WebSocket or JSON error beneath it)."""


class InvalidUrlError(DirectorLinkError, ValueError):
    """A server address that cannot be used (code ``invalid_url``)."""

    code = "invalid_url"


class UnknownServiceError(DirectorLinkError, LookupError):
    """No service of that name or kind (code ``unknown_service``)."""

    code = "unknown_service"


class DuplicateServiceError(DirectorLinkError, ValueError):
    """A service with that name exists already (code ``duplicate_service``)."""

    code = "duplicate_service"


class UnknownJobError(DirectorLinkError, LookupError):
    """No job with that id (code ``unknown_job``)."""

    code = "unknown_job"


class ServiceError(DirectorLinkError, ConnectionError):
    """The server cannot be reached or is not what it should be.

    Codes: ``connection_failed``, ``wrong_service``, ``http_status``, ``protocol_error``; from OpenAI-compatible
    servers also ``auth_failed`` (bad or missing key), ``rate_limited`` (429), ``server_error`` (5xx) and
    ``bad_request`` (e.g. an unknown model).
    """

    code = "connection_failed"


class WorkflowError(DirectorLinkError, ValueError):
    """The workflow or a parameter is invalid, or the server rejected it.

    Codes: ``invalid_workflow``, ``invalid_parameter``, ``validation_failed`` (then ``node_errors`` lists the
    nodes and inputs at fault).
    """

    code = "invalid_workflow"


class JobFailed(DirectorLinkError):
    """A job ended without results. ``job_id``, ``node_id``, ``node_type``, ``exception_type``, ``traceback``.

    Codes: ``execution_failed``, ``interrupted``, ``server_restarted``, ``output_write_failed``,
    ``service_removed`` (its service was removed, or its address changed after the job was sent),
    ``hub_closed`` (the hub was closed before the job ended), ``not_posted`` (the server does not know a job that
    was never confirmed to have reached it, e.g. one still waiting for the server when Blender was closed).
    """

    code = "execution_failed"


class JobCancelled(JobFailed):
    """The job was cancelled (code ``cancelled``)."""

    code = "cancelled"


class Timeout(DirectorLinkError, TimeoutError):
    """A wait ran out of time; the job goes on (code ``timeout``)."""

    code = "timeout"


class OutputError(DirectorLinkError, OSError):
    """Writing results failed, e.g. a full disk (codes ``output_write_failed``, ``io_error``)."""

    code = "output_write_failed"


class HubClosed(DirectorLinkError, RuntimeError):
    """The hub was closed (code ``hub_closed``)."""

    code = "hub_closed"


__all__ = [
    "DirectorLinkError",
    "DuplicateServiceError",
    "ErrorCause",
    "HubClosed",
    "InvalidUrlError",
    "JobCancelled",
    "JobFailed",
    "OutputError",
    "ServiceError",
    "Timeout",
    "UnknownJobError",
    "UnknownServiceError",
    "WorkflowError",
]

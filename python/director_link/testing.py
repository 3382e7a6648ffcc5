"""Test helpers: a local ComfyUI simulator for your own pipeline tests.

``ComfySimulator`` is a small server on ``127.0.0.1`` (an ephemeral port) that speaks the ComfyUI 0.3.64
HTTP + WebSocket protocol the way a real server does (message order, routing, validation errors, queue,
history, ``/view``, uploads, cache). It really runs a few image nodes (``EmptyImage``, ``ImageInvert``,
``ImageScale``, ``ImageBlur``, ``SaveImage``, ``PreviewImage``, ``LoadImage``, ``GetImageSize``, ...) and four
test nodes (``AcceptanceProgress``, ``AcceptanceFail``, ``AcceptanceSlow``, ``AcceptanceText``), so no GPU or
model files are needed. ``/system_stats`` reports ``argv == ["director-link-simulator"]`` so tools can tell it
from a real server.

    >>> from director_link import Hub
    >>> from director_link.testing import ComfySimulator, api_workflow
    >>> with ComfySimulator(time_scale=0.2) as sim, Hub() as hub:      # doctest: +SKIP
    ...     hub.add_service("comfyui", sim.url)
    ...     job = hub.submit("comfyui", api_workflow("progress", steps=3))
    ...     result = job.wait(timeout=30)

``time_scale`` multiplies every node sleep (0.2 = five times faster). Files go to a temporary folder
(``sim.output_dir``, ``sim.input_dir``) that ``close()`` removes.

Scripted faults for resilience tests: ``drop_sockets_after(n)``, ``drop_sockets()``,
``refuse_connections(seconds)``, ``restart(down_seconds=0.5)`` (queue, history and cache are lost, like a
process restart), ``stall(seconds)`` (nothing is sent, HTTP gets no answer) and ``send_garbage(kind)`` with
``kind`` one of ``invalid_json``, ``nan_json``, ``unknown_type``, ``wrong_types``, ``truncated_binary``,
``unknown_binary``, ``huge_text``, ``huge_binary``. ``requests()`` lists every HTTP request received
(``{"method", "path", "query", "json"}``) so a test can assert what the client sent; ``stats()`` counts
sockets, connections and prompts.
"""

from __future__ import annotations

import random
from typing import Any

from ._native import ComfySimulator

__all__ = ["ComfySimulator", "api_workflow", "WORKFLOW_KINDS"]

WORKFLOW_KINDS = ("invert", "progress", "fail", "slow")


def _nonce(nonce: int | None) -> int:
    return random.randrange(0, 2**32) if nonce is None else nonce


def api_workflow(kind: str, **params: Any) -> dict[str, Any]:
    """A ready API-format prompt for tests and demos.

    ``"invert"``: EmptyImage → ImageInvert → SaveImage (``width``, ``height``, ``color``, ``filename_prefix``).
    ``"progress"``: AcceptanceProgress → SaveImage (``steps``, ``step_seconds``, ``send_preview``, ``nonce``).
    ``"fail"``: AcceptanceFail (``message``, ``steps_before_failing``).
    ``"slow"``: AcceptanceSlow (``seconds``, ``nonce``).
    A random ``nonce`` is used unless given, so repeated prompts are not served from the server's cache.
    """
    if kind == "invert":
        prompt = {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {
                    "width": params.pop("width", 64),
                    "height": params.pop("height", 48),
                    "batch_size": 1,
                    "color": params.pop("color", 0xFF0000),
                },
                "_meta": {"title": "Empty Image"},
            },
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Invert"}},
            "3": {
                "class_type": "SaveImage",
                "inputs": {
                    "images": ["2", 0],
                    "filename_prefix": params.pop("filename_prefix", "dl_test/invert"),
                },
                "_meta": {"title": "Save Image"},
            },
        }
    elif kind == "progress":
        prompt = {
            "10": {
                "class_type": "AcceptanceProgress",
                "inputs": {
                    "steps": params.pop("steps", 5),
                    "step_seconds": params.pop("step_seconds", 0.2),
                    "width": params.pop("width", 64),
                    "height": params.pop("height", 64),
                    "send_preview": params.pop("send_preview", True),
                    "nonce": _nonce(params.pop("nonce", None)),
                },
            },
            "11": {
                "class_type": "SaveImage",
                "inputs": {
                    "images": ["10", 0],
                    "filename_prefix": params.pop("filename_prefix", "dl_test/progress"),
                },
            },
        }
    elif kind == "fail":
        prompt = {
            "5": {
                "class_type": "AcceptanceFail",
                "inputs": {
                    "message": params.pop("message", "acceptance failure"),
                    "steps_before_failing": params.pop("steps_before_failing", 0),
                },
            }
        }
    elif kind == "slow":
        prompt = {
            "20": {
                "class_type": "AcceptanceSlow",
                "inputs": {
                    "seconds": float(params.pop("seconds", 30.0)),
                    "nonce": _nonce(params.pop("nonce", None)),
                },
            }
        }
    else:
        raise ValueError(f"unknown workflow kind {kind!r}; use one of {', '.join(WORKFLOW_KINDS)}")
    if params:
        raise TypeError(f"api_workflow({kind!r}) got unexpected parameters: {', '.join(sorted(params))}")
    return prompt

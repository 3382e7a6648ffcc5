""" "Write shots": a logline or script text → a shot list, through an OpenAI-compatible service (LiteLLM, Ollama,
LM Studio …). The answer streams into the panel (``TextDelta`` events, kept by the view-model) and can be cancelled;
when it is complete it becomes timeline markers, one per shot, each with its prompt. Pure Python: the operator
(``operators``) starts the chat and turns the parsed shots into markers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM = (
    "You are a film director's assistant. Turn the user's logline or script into a shot list. "
    "Answer with one line per shot, exactly 'Shot N: <what the camera sees, as an image prompt>', nothing else."
)

_SHOT = re.compile(r"(?:^|\s)shot\s*(\d+)\s*[:.)\-–]\s*", re.IGNORECASE)


def messages(logline: str, count: int = 0) -> list[dict[str, str]]:
    ask = logline.strip()
    if count > 0:
        ask += f"\n\nWrite exactly {count} shots."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]


def parse_shots(text: str) -> list[str]:
    """The shots' prompts in an answer: the text after each "Shot N:" (on one line or run together), else one shot
    per non-empty line (list markers stripped). Empty shots are dropped."""
    marks = list(_SHOT.finditer(text))
    if marks:
        out = []
        for index, mark in enumerate(marks):
            end = marks[index + 1].start() if index + 1 < len(marks) else len(text)
            out.append(" ".join(text[mark.end() : end].split()))
    else:
        out = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in text.splitlines()]
    return [shot for shot in out if shot]


@dataclass(frozen=True)
class Placed:
    name: str
    frame: int
    prompt: str


def place(prompts: list[str], frame_start: int, frame_end: int, taken: set[str] | frozenset[str] = frozenset()):
    """Markers for ``prompts`` spread evenly over ``frame_start..frame_end`` (at least one frame each), named
    "Shot 1", "Shot 2" … (a name already on the timeline gets a suffix)."""
    count = len(prompts)
    if not count:
        return []
    span = max(frame_end - frame_start + 1, count)
    out = []
    used = set(taken)
    for index, prompt in enumerate(prompts):
        name = f"Shot {index + 1}"
        suffix = 2
        while name in used:
            name = f"Shot {index + 1}.{suffix}"
            suffix += 1
        used.add(name)
        out.append(Placed(name=name, frame=frame_start + (index * span) // count, prompt=prompt))
    return out

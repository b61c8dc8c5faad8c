"""Versioned data contracts shared by every stage.

Pydantic models describe records at the edges (configuration, messages,
dead letters, the published JSON Schemas). Inside the pipeline the same
records travel as columnar numpy batches whose column names and dtypes are
declared next to each model, so the two cannot drift apart.
"""

from schemas.actions import Action, ActionKind
from schemas.deadletters import DeadLetter
from schemas.detections import Detection, Severity
from schemas.events import EVENT_COLUMNS, AccessEvent, SubjectKind
from schemas.windows import WINDOW_FEATURES, WindowFeatures

__all__ = [
    "EVENT_COLUMNS",
    "WINDOW_FEATURES",
    "AccessEvent",
    "Action",
    "ActionKind",
    "DeadLetter",
    "Detection",
    "Severity",
    "SubjectKind",
    "WindowFeatures",
]

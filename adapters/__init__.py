"""The kind-free core of changegate's adapters: the plan model (Step, Plan, Guard,
their canonical JSON and fingerprint), the errors, the adapter interface, and the
`TargetKind` object each kind registers. Nothing here imports Django or a concrete
adapter; the DNS adapter package imports from here, never the reverse."""

from .errors import (
    AdapterError,
    ConfigError,
    DataRefusedError,
    DriftError,
    FieldError,
    ItemValidationError,
    PartialApplyError,
    TargetReverted,
    TransientError,
)
from .interface import Adapter, ApplyResult, MappingSnapshot, Options, ServerCheck, Snapshot, VerifyReport
from .kind import CheckKind, PatchItem, Registry, TargetKind, UnknownKind
from .plan import Guard, Key, Plan, RRKey, RRValue, Step, Value

__all__ = [
    "Adapter", "AdapterError", "ApplyResult", "CheckKind", "ConfigError", "DataRefusedError", "DriftError",
    "FieldError", "Guard", "ItemValidationError", "Key", "MappingSnapshot", "Options", "PartialApplyError",
    "PatchItem", "Plan", "RRKey", "RRValue", "Registry", "ServerCheck", "Snapshot", "Step", "TargetKind",
    "TargetReverted", "TransientError", "UnknownKind", "Value", "VerifyReport",
]

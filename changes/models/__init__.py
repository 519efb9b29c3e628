"""Targets, change requests and the audit log.

State is data: `ChangeRequest.State` and `TRANSITIONS` below. Only
`changes.services` assigns `state`; nothing is derived in save() or signals.
"""

# One module per concern (issue 11: no module over 450 lines); every name the
# single models.py had is re-exported, so `from changes.models import X` (code,
# migrations, tests, ENUM_NAME_OVERRIDES) keeps working. Import order is the old
# class order, so Django registers the models (and creates their permissions) in
# the same order as before (hence not isort's order).
from changes.models.targets import Target  # noqa: I001
from changes.models.requests import EDITABLE, TERMINAL, TRANSITIONS, ChangeRequest, S
from changes.models.audit import (
    AppendOnlyError,
    AppendOnlyQuerySet,
    AuditChainHead,
    AuditCheckpoint,
    AuditCheckpointPublication,
    AuditEvent,
    Origin,
    canonical_event,
    checkpoint_message,
)
from changes.models.executions import (
    EXECUTION_STATE_OF,
    EXECUTION_TRANSITIONS,
    LEASED,
    CheckResult,
    E,
    Execution,
)
from changes.models.baselines import Baseline, BaselineEntry
from changes.models.grants import AccountOrigin, GrantRequest, PrivilegeGain
from changes.models.notifications import Notification
from changes.models.comments import COMMENT_BODY_MAX, ChangeComment

__all__ = [
    "EDITABLE",
    "EXECUTION_STATE_OF",
    "EXECUTION_TRANSITIONS",
    "LEASED",
    "TERMINAL",
    "TRANSITIONS",
    "AccountOrigin",
    "AppendOnlyError",
    "AppendOnlyQuerySet",
    "AuditChainHead",
    "AuditCheckpoint",
    "AuditCheckpointPublication",
    "AuditEvent",
    "ChangeRequest",
    "CheckResult",
    "E",
    "Execution",
    "GrantRequest",
    "Notification",
    "Origin",
    "PrivilegeGain",
    "S",
    "Target",
    "Baseline",
    "BaselineEntry",
    "canonical_event",
    "checkpoint_message",
    "COMMENT_BODY_MAX",
    "ChangeComment",
]

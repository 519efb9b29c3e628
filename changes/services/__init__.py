"""Every write in `changes`: targets (`targets`) and change requests, one function
per lifecycle step (`change_requests`). Callers import from here."""

from changes.services.change_requests import (  # noqa: F401
    TITLE_MAX,
    PreparedItems,
    State,
    change_cancel,
    change_create,
    change_plan,
    change_propose_rollback,
    change_submit,
    change_update,
)
from changes.services.comments import comment_add  # noqa: F401
from changes.services.reverts import change_revert, may_revert, revert_refusal  # noqa: F401
from changes.services.targets import (  # noqa: F401
    POLICY_RANGES,
    target_refresh_zone_stats,
    target_register,
    target_rename,
    target_update_policy,
)

"""The Django admin: a thin adapter over `changes.services` and `changes.selectors`.

Nothing here decides who may do what or writes `state`: adding a target or a
change calls its service, the change page is rendered by hand (no model form, so
no POST can write a field) and its buttons call one service each; approve and
reject (buttons and bulk actions) call `approvals.policy`, which alone decides.
The admin only asks the policy's `can_review` whether to show the buttons.
Whatever a service refuses becomes a form error or an admin message, never a 500.

The add views are not the admin's `changeform_view`: that one wraps the request
in `transaction.atomic()`, and the services read the live zone *before* opening
their own transaction so a DNS timeout never holds a database lock.

One module per page family; importing them registers their ModelAdmins with
`admin.site` (Django's autodiscover imports this package):
`targets`, `change_requests` (with `diff`, the plan and live-drift rendering),
`audit` (the audit log and its export), `grants` (roles, users, groups),
`notifications` (the outbox and its dead letters); `common` is what they share.
"""

from changes.admin import change_requests, grants, targets  # noqa: F401  # registrations

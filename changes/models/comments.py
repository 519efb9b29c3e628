"""The discussion on a change (issue 15): comments by its author and reviewers,
each also an audit event (`comment_added`). Append-only for now: no service edits
or deletes a comment, so what people were told is what the audit log holds.
Separate because only `changes.services.comments` writes it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from changes.models.requests import ChangeRequest

# The one limit on a comment's length (after outer whitespace is stripped): the
# service checks it and the API's request serializer documents it.
COMMENT_BODY_MAX = 5000


class ChangeComment(models.Model):
    change = models.ForeignKey(ChangeRequest, on_delete=models.PROTECT, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField(help_text=f"1 to {COMMENT_BODY_MAX} characters.")
    created_at = models.DateTimeField(auto_now_add=True)
    # Usernames of the @mentions that resolved, when it was written, to someone who
    # may see the change (and was alerted). Kept as written: a later change of
    # rights does not rewrite who was told.
    mentions = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["pk"]
        # The discussion of one change, oldest first: the only read.
        indexes = [models.Index(fields=["change", "id"], name="changes_comment_change_id")]

    def __str__(self) -> str:
        return f"comment #{self.pk} on change #{self.change_id}"

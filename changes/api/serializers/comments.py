"""The discussion on a change (issue 15): a comment as the API shows it, the body a
POST takes, and the answer to that POST. Separate from change_requests.py: the
change detail does not carry its comments (its statement count stays constant)."""

from __future__ import annotations

from rest_framework import serializers

from changes.api.serializers.fields import StrictCharField, StrictInputSerializer
from changes.models import COMMENT_BODY_MAX


class ChangeCommentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    change = serializers.IntegerField(source="change_id")
    author = serializers.CharField(source="author.username")
    body = serializers.CharField()
    mentions = serializers.ListField(
        child=serializers.CharField(), read_only=True,
        help_text="Usernames of the @mentions that reached someone who may see the change (alerted by email).")
    created_at = serializers.DateTimeField()


class ChangeCommentAddedSerializer(ChangeCommentSerializer):
    mentions_ignored = serializers.ListField(
        child=serializers.CharField(), read_only=True,
        help_text="The @names that reached nobody: unknown, or not someone who may see the change (the two are "
                  "not told apart). Only in this answer, never stored.")


class ChangeCommentCreateSerializer(StrictInputSerializer):
    body = StrictCharField(max_length=COMMENT_BODY_MAX,
                           help_text=f"The comment, 1 to {COMMENT_BODY_MAX} characters (outer whitespace is "
                                     "trimmed). `@username` mentions alert that user by email if they may see the "
                                     "change.")

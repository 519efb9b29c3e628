"""`changegate revert ID --reason` against the real API (pytest-django's live_server,
a real token, a real named): the one-person revert inside the watch window, and the
refusal after it pointing at `changegate rollback`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from changes.models import ChangeRequest
from changes.services import target_update_policy
from tests.changes.test_cli import clean_env, run, server, token  # noqa: F401 - the CLI fixtures, one copy
from tests.factories import approved
from tests.factories import run as apply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]
State = ChangeRequest.State


@pytest.fixture
def watched(dns_target, operator):
    return target_update_policy(actor=operator, target=dns_target, bake_seconds=0, watch_seconds=600)


def test_revert_in_the_window_prints_the_new_change_and_after_it_says_rollback(
        server, watched, author, reviewer, run):  # noqa: F811 - the imported fixtures
    change = approved(author, reviewer, watched)
    assert apply(change) == State.APPLIED
    result = run("revert", str(change.pk), "--reason", "pay.example answers 502")
    assert result.code == 0, result.err
    revert = ChangeRequest.objects.get(reverts=change)
    assert result.out.splitlines() == [
        f"change #{revert.pk} reverts #{change.pk} and is now approved (approved on the approvals of #{change.pk}: "
        "no second approval needed inside its watch window)",
        f"follow it with: changegate wait {revert.pk}",
    ]
    assert (revert.state, revert.author.username) == (State.APPROVED, "alice")

    other = approved(author, reviewer, watched, items=[{"op": "upsert", "name": "api", "type": "A", "ttl": 300,
                                                         "records": ["192.0.2.21"]}])
    assert apply(revert) == State.APPLIED and apply(other) == State.APPLIED
    ended = timezone.now() - timedelta(seconds=1)
    ChangeRequest.objects.filter(pk=other.pk).update(watch_until=ended)
    late = run("revert", str(other.pk), "-m", "too late")
    assert (late.code, late.out) == (1, "")
    assert late.err == (f"error: the watch window of change #{other.pk} ended at {ended.isoformat()}; a rollback "
                        f"now is an ordinary four-eyes change (changegate rollback {other.pk})\n")
    assert not ChangeRequest.objects.filter(reverts=other).exists()


def test_wait_shows_the_phase_and_points_at_revert_while_the_change_is_watched(
        server, watched, author, reviewer, run):  # noqa: F811 - the imported fixtures
    change = approved(author, reviewer, watched)
    assert apply(change) == State.APPLIED
    waited = run("wait", str(change.pk), "--timeout", "5")
    assert waited.code == 0, waited.err
    lines = waited.out.splitlines()
    assert lines[0] == f"change #{change.pk} ended applied"
    assert lines[1].startswith("applied, watching (checks every 30 s); its author or an approver may revert it alone")
    assert lines[1].endswith(f" left): changegate revert {change.pk} --reason TEXT")
    # stderr follows the phase (not a tty: one line per phase).
    assert waited.err.startswith(f"#{change.pk} applied: applied, watching (checks every 30 s)")
    # show says until when and how to undo it alone, to the person who may.
    shown = run("show", str(change.pk)).out
    assert "  now          applied, watching (checks every 30 s)" in shown
    assert "  revert       you may undo it alone until " in shown
    assert f": changegate revert {change.pk} --reason TEXT" in shown

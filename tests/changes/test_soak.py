"""The soak test of issue 10: the apply pipeline under a seeded random mix of
proposals, approvals, rejections, cancels, re-plans, outside drifts and failing
checks, through the API, with 2 real Celery workers, real beat, real redis and
real named, while a DNS server restarts mid-bake, a worker is killed with SIGKILL
and redis restarts empty. Then: every change ended or is legitimately waiting,
every zone is what the applied changes say in order, the audit chain verifies,
no 5xx, no lost alert. The harness is tests/soak.py (bench/soak_bench.py times it).

CHANGEGATE_SOAK_SECONDS (default 30) is how long the load runs; CHANGEGATE_SOAK_SEED
(default 10) picks the mix. It runs on SQLite too: writes are serialized there, but
every invariant means the same and the faults are the same processes.
"""

from __future__ import annotations

import os

import pytest

from config.celery_app import app
from tests.processes import app_broker, point_app_at
from tests.soak import Soak, Write, explained

# Real commits: real worker processes and live_server read the database through
# their own connections.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]
SOAK_SECONDS = float(os.environ.get("CHANGEGATE_SOAK_SECONDS", "30"))
SOAK_SEED = int(os.environ.get("CHANGEGATE_SOAK_SEED", "10"))
LOAD_ZONES = 10


@pytest.fixture
def broker():
    with app_broker(app) as server:
        yield server


@pytest.fixture
def load_zones(named_server) -> list[str]:
    """Ten zones of the session's named that no other test touched."""
    from tests.conftest import spare_zone

    return [spare_zone() for _ in range(LOAD_ZONES)]


def test_the_pipeline_survives_a_soak_with_faults(
        live_server, broker, named_server, load_zones, operator, author, reviewer, second_reviewer, make_user,
        settings):
    # Alerts go through the workers, as deployed (the test settings deliver them here).
    settings.CHANGEGATE_NOTIFY_EAGER = False
    soak = Soak(base_url=live_server.url, broker=broker, named=named_server, zones=load_zones, operator=operator,
                engineers=[author, make_user("erin")], reviewers=[reviewer, second_reviewer],
                auditor=make_user("root", is_superuser=True), seconds=SOAK_SECONDS, workers=2, seed=SOAK_SEED,
                point_app=lambda: point_app_at(app, broker.url))
    try:
        soak.setup()
        result = soak.run()
        problems = soak.verify()
        # The zone check can fail: a write nobody recorded is reported, and only it.
        zone = soak.zones[0]
        assert zone.write(f"unrecorded.{zone.name}.", "203.0.113.7")
        flagged = soak.verify_zones()
    finally:
        soak.close()
    print(result.summary())
    assert not problems, result.summary()
    assert result.ops["approve"] and result.ops["drift"] and result.ops["cancel"], result.summary()
    assert len(result.faults) == 3, result.summary()
    assert len(flagged) == 1 and f"unrecorded.{zone.name}." in flagged[0], flagged


A, B, C, D = ((300, (f"192.0.2.{i}",)) for i in range(1, 5))


@pytest.mark.parametrize(("ours", "outside", "final", "ok"), [
    ([], [], A, True),
    ([Write(A, B, "1"), Write(B, C, "2")], [], C, True),
    ([Write(A, B, "1"), Write(B, C, "2")], [], B, False),  # the second apply is missing
    ([Write(B, C, "2"), Write(A, B, "1")], [], C, False),  # applied out of order
    ([Write(A, B, "1"), Write(B, A, "1 rolled back")], [], A, True),
    ([Write(A, B, "1"), Write(B, A, "1 rollback failed", optional=True)], [], B, True),
    ([Write(A, B, "1")], [Write(None, D, "outside", outside=True)], D, True),  # drifted after the apply
    ([Write(A, B, "1")], [Write(None, D, "outside", outside=True)], B, False),  # B's before was never live after D
    ([Write(D, B, "re-planned after the drift")], [Write(None, D, "outside", outside=True)], B, True),
])
def test_the_zone_check_accepts_only_histories_the_writes_explain(ours, outside, final, ok):
    assert explained(A, ours, outside, final) is ok

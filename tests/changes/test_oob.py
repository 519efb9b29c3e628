"""Out-of-band change detection against a real named: an nsupdate behind
changegate's back is reported with the right diff; changegate's own applies and
rollbacks are not."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from django.conf import settings
from django.core import mail
from django.db import connection, connections
from django.utils import timezone

from changes import adapters as adapters_module
from changes.kinds import kind_named
from changes.models import AuditEvent, ChangeRequest, Target, Baseline
from changes.selectors import out_of_band_changes
from changes.services import (
    target_register,
    target_update_policy,
)
from dns_adapters.base import Plan, RRKey, RRValue, Step
from dns_adapters.local_named import free_port
from drift.sweep import (
    DIFF_CAP,
    RRsetDiff,
    _event_payload,
    oob_baseline_apply,
    oob_check_target,
    oob_sweep,
    records_digest,
    zone_diff,
)
from pipeline.execution import execution_claim
from pipeline.tasks import check_out_of_band
from tests.factories import approved, run

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State


@pytest.fixture
def reviewers_with_mail(reviewer, second_reviewer, author):
    for user, email in ((reviewer, "bob@example.test"), (second_reviewer, "carol@example.test"),
                        (author, "alice@example.test")):
        user.email = email
        user.save()


def outside(named_server, target, build):
    """An nsupdate with the server's own key: a change nobody asked changegate for."""
    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    build(update)
    response = dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)
    assert response.rcode() == 0


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def oob_mails():
    return [m for m in mail.outbox if "out_of_band_change" in m.subject]


def test_the_first_read_records_the_baseline(fast_target):
    result = oob_check_target(target=fast_target)
    assert result.status == "baseline"
    baseline = Baseline.objects.get(target=fast_target)
    zone = fast_target.name + "."
    assert baseline.records[f"www.{zone} A"] == {"ttl": 300, "rdatas": ["192.0.2.10", "192.0.2.11"]}
    assert baseline.version == result.serial and baseline.item_count == len(baseline.records) == 9
    assert baseline.digest == records_digest(baseline.records)
    (event,) = events("zone_baseline_recorded")
    assert event.target_id == fast_target.pk
    assert event.payload == {"serial": baseline.version, "rrsets": 9, "records": 10, "digest": baseline.digest}
    assert Target.objects.get(pk=fast_target.pk).oob_checked_at is not None
    assert events("out_of_band_change") == []


def test_an_unchanged_zone_reports_nothing(fast_target):
    oob_check_target(target=fast_target)
    assert oob_check_target(target=fast_target).status == "unchanged"
    assert oob_check_target(target=fast_target).status == "unchanged"
    assert events("out_of_band_change") == [] and oob_mails() == []


def test_an_nsupdate_behind_changegates_back_is_one_out_of_band_change_with_the_diff(
    fast_target, named_server, reviewers_with_mail, reviewer, django_capture_on_commit_callbacks
):
    oob_check_target(target=fast_target)
    zone = fast_target.name + "."

    def sneak(update):
        update.replace("www", 300, "A", "203.0.113.50")
        update.add("rogue", 60, "TXT", '"hello"')
        update.delete("txt", "TXT")

    outside(named_server, fast_target, sneak)
    with django_capture_on_commit_callbacks(execute=True):  # the alert is delivered on commit
        result = oob_check_target(target=fast_target)
    assert result.status == "changed"
    (event,) = events("out_of_band_change")
    assert event.target_id == fast_target.pk and event.change_id is None and event.actor_id is None
    payload = event.payload
    assert payload["diff"] == [
        {"name": f"rogue.{zone}", "type": "TXT", "before": None, "after": {"ttl": 60, "rdatas": ['"hello"']}},
        {"name": f"txt.{zone}", "type": "TXT", "before": {"ttl": 300, "rdatas": ['"v=spf1 -all"']}, "after": None},
        {"name": f"www.{zone}", "type": "A", "before": {"ttl": 300, "rdatas": ["192.0.2.10", "192.0.2.11"]},
         "after": {"ttl": 300, "rdatas": ["203.0.113.50"]}},
    ]  # the SOA serial the update bumped is not part of it
    assert (payload["added"], payload["removed"], payload["changed"], payload["total"]) == (1, 1, 1, 3)
    assert payload["truncated"] is False
    assert payload["serial"]["live"] > payload["serial"]["baseline"]
    # The reviewers are told, with the diff; the engineer is not a reviewer.
    (message,) = oob_mails()
    assert sorted(message.to) == ["bob@example.test", "carol@example.test"]
    assert f"+www.{zone} 300 IN A 203.0.113.50" in message.body
    assert f"-txt.{zone} 300 IN TXT" in message.body
    # Reported once: the live zone is the new baseline.
    assert oob_check_target(target=fast_target).status == "unchanged"
    assert len(events("out_of_band_change")) == 1
    assert Baseline.objects.get(target=fast_target).records[f"www.{zone} A"]["rdatas"] == ["203.0.113.50"]


def test_an_soa_change_other_than_the_serial_is_out_of_band(fast_target, named_server):
    first = oob_check_target(target=fast_target)
    zone = fast_target.name + "."
    soa = f"ns1.{zone} hostmaster.{zone} {first.serial + 10} 7200 600 604800 300"
    outside(named_server, fast_target, lambda u: u.replace("@", 3600, "SOA", soa))
    assert oob_check_target(target=fast_target).status == "changed"
    ((entry,),) = [e.payload["diff"] for e in events("out_of_band_change")]
    assert (entry["name"], entry["type"]) == (zone, "SOA")
    assert entry["before"]["rdatas"][0].split()[3] == "3600" and entry["after"]["rdatas"][0].split()[3] == "7200"


def test_changegates_own_apply_is_not_out_of_band(
        author, reviewer, fast_target, reviewers_with_mail, django_capture_on_commit_callbacks):
    # Alerts are delivered on commit: run the callbacks, or "no mail" below could not fail.
    with django_capture_on_commit_callbacks(execute=True):
        oob_check_target(target=fast_target)
        change = approved(author, reviewer, fast_target)
        assert run(change) == State.APPLIED
    baseline = Baseline.objects.get(target=fast_target)
    assert baseline.records[f"www.{fast_target.name}. A"]["rdatas"] == ["192.0.2.99"]
    with django_capture_on_commit_callbacks(execute=True):
        assert oob_check_target(target=fast_target).status == "unchanged"  # the SOA serial moved, nothing else
        assert oob_check_target(target=fast_target).status == "unchanged"
    assert [m.subject for m in mail.outbox if "approved" in m.subject]  # delivery did run
    assert events("out_of_band_change") == [] and oob_mails() == []


def test_changegates_own_rollback_is_not_out_of_band(author, reviewer, fast_target):
    oob_check_target(target=fast_target)
    before = Baseline.objects.get(target=fast_target).records
    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}
    change = approved(author, reviewer, fast_target, health_checks=[dead])
    assert run(change) == State.ROLLED_BACK
    assert Baseline.objects.get(target=fast_target).records == before
    assert oob_check_target(target=fast_target).status == "unchanged"
    assert events("out_of_band_change") == []


def test_an_outside_change_after_changegates_apply_is_still_reported(author, reviewer, fast_target, named_server):
    oob_check_target(target=fast_target)
    assert run(approved(author, reviewer, fast_target)) == State.APPLIED
    outside(named_server, fast_target, lambda u: u.replace("api", 300, "A", "198.51.100.1"))
    assert oob_check_target(target=fast_target).status == "changed"
    ((entry,),) = [e.payload["diff"] for e in events("out_of_band_change")]
    assert (entry["name"], entry["after"]["rdatas"]) == (f"api.{fast_target.name}.", ["198.51.100.1"])


def test_an_apply_writes_the_keys_its_plan_touches_whatever_the_zones_size(fast_target):
    """Issue 14, finding 1: the baseline work of an apply follows the plan, not the
    zone (the whole-zone JSON was decoded, re-hashed and rewritten by every apply)."""
    from django.test.utils import CaptureQueriesContext

    oob_check_target(target=fast_target)
    zone = fast_target.name + "."
    www = RRKey(f"www.{zone}", "A")

    def one_step_apply(address):
        plan = Plan(zone=zone, steps=(Step(key=www, before=None, after=RRValue(300, (address,))),))
        with CaptureQueriesContext(connection) as queries:
            oob_baseline_apply(target=fast_target, plan=plan)
        return len(queries), sum(len(query["sql"]) for query in queries.captured_queries)

    statements, sql_chars = one_step_apply("192.0.2.98")
    added = 3000
    oob_baseline_apply(target=fast_target, plan=Plan(zone=zone, steps=tuple(
        Step(key=RRKey(f"h{n}.{zone}", "A"), before=None, after=RRValue(60, (f"198.51.100.{n % 250}",)))
        for n in range(added))))
    large_statements, large_sql_chars = one_step_apply("192.0.2.99")
    assert large_statements == statements
    assert large_sql_chars < sql_chars + 100  # ids grew a digit or two; 3,009 RRsets would be ~150 kB
    baseline = Baseline.objects.get(target=fast_target)
    assert (baseline.item_count, baseline.digest) == (9 + added, records_digest(baseline.records))
    assert baseline.records[str(www)] == {"ttl": 300, "rdatas": ["192.0.2.99"]}
    # The next check compares against the entries: the hosts the zone never had are
    # reported removed, www changed, and the live zone becomes the baseline again.
    result = oob_check_target(target=fast_target)
    assert result.status == "changed"
    assert (result.event.payload["removed"], result.event.payload["changed"]) == (added, 1)
    baseline = Baseline.objects.get(target=fast_target)
    assert (baseline.item_count, baseline.digest) == (9, records_digest(baseline.records))
    assert oob_check_target(target=fast_target).status == "unchanged"


def test_the_check_after_an_apply_parses_only_the_keys_that_moved(author, reviewer, fast_target, monkeypatch):
    """Issue 14, finding 1: an apply blanks the wire digest, and the check after it
    compared the whole zone in text form; it now parses the keys whose stored wire
    digest is not the read's only (the plan's, and the SOA whose serial moved)."""
    from dns_adapters.axfr import WireZoneSnapshot

    oob_check_target(target=fast_target)
    assert run(approved(author, reviewer, fast_target)) == State.APPLIED
    parsed = []
    real_get = WireZoneSnapshot.get
    monkeypatch.setattr(WireZoneSnapshot, "get", lambda self, key: (parsed.append(str(key)), real_get(self, key))[1])
    assert oob_check_target(target=fast_target).status == "unchanged"
    zone = fast_target.name + "."
    assert sorted(parsed) == [f"www.{zone} A", f"{zone} SOA"]
    parsed.clear()
    assert oob_check_target(target=fast_target).status == "unchanged"  # the read's bytes again: nothing parsed
    assert parsed == []
    assert events("out_of_band_change") == []


def test_a_check_while_an_apply_is_in_flight_is_skipped(author, reviewer, fast_target, named_server):
    oob_check_target(target=fast_target)
    change = approved(author, reviewer, fast_target)
    assert execution_claim(execution_id=change.execution.pk, worker="busy-worker") is not None
    outside(named_server, fast_target, lambda u: u.replace("api", 300, "A", "198.51.100.1"))
    assert oob_check_target(target=fast_target).status == "busy"
    assert events("out_of_band_change") == []


def test_a_check_gives_up_when_an_apply_moved_the_baseline_while_it_read(fast_target, monkeypatch):
    oob_check_target(target=fast_target)
    key = RRKey(f"www.{fast_target.name}.", "A")
    plan = Plan(zone=fast_target.name + ".", steps=(
        Step(key=key, before=RRValue(300, ("192.0.2.10", "192.0.2.11")), after=RRValue(300, ("192.0.2.99",))),))

    class ApplyLandsDuringTheRead:
        def __init__(self, real):
            self.real = real

        def version(self):
            return self.real.version()

        def read_zone(self):
            snapshot = self.real.read_zone()  # the zone before the apply...
            oob_baseline_apply(target=fast_target, plan=plan)  # ...and the baseline after it
            return snapshot

        def close(self):
            self.real.close()

    real_factory = adapters_module.adapter_class(fast_target.kind)
    monkeypatch.setattr(adapters_module, "_factory_override",
                        lambda target: ApplyLandsDuringTheRead(
                            real_factory(target.config, key_dir=settings.CHANGEGATE_KEY_DIR)))
    assert oob_check_target(target=fast_target).status == "busy"
    assert events("out_of_band_change") == []


def test_a_zone_that_cannot_be_read_is_a_failed_check_not_a_crash(staff, named_server, fast_target):
    dead = target_register(actor=staff, name="dead.test", check_reachable=False, config={
        "zone": "dead.test", "primary": f"127.0.0.1:{free_port()}", "tsig_key_file": str(named_server.key_file),
        "timeout": 0.5})
    results = oob_sweep()
    assert results == {fast_target.pk: "baseline", dead.pk: "failed"}
    (event,) = events("out_of_band_check_failed")
    assert event.target_id == dead.pk and event.payload["error"]
    assert not Baseline.objects.filter(target=dead).exists()
    # Checked (and failed) counts as checked: retried after its interval, not every sweep.
    assert oob_sweep() == {}


def test_the_periodic_task_checks_only_due_targets(staff, named_server, fast_target):
    def register(name, **policy):
        target = target_register(actor=staff, name=name, check_reachable=False, config={
            "zone": fast_target.name, "primary": named_server.primary,
            "tsig_key_file": str(named_server.key_file), "timeout": 3})
        return target_update_policy(actor=staff, target=target, **policy) if policy else target

    off = register("off.test", oob_interval_seconds=0)
    recent = register("recent.test", oob_interval_seconds=600)
    stale = register("stale.test", oob_interval_seconds=600)
    now = timezone.now()
    Target.objects.filter(pk=recent.pk).update(oob_checked_at=now - timedelta(seconds=300))
    Target.objects.filter(pk=stale.pk).update(oob_checked_at=now - timedelta(seconds=900))

    assert check_out_of_band() == 2  # the task, in-process
    checked = set(Baseline.objects.values_list("target_id", flat=True))
    assert checked == {fast_target.pk, stale.pk}
    assert off.pk not in checked and recent.pk not in checked
    assert oob_sweep() == {}  # nothing is due a second time within its interval


def test_auditors_list_out_of_band_changes_engineers_do_not(fast_target, named_server, auditor, author, outsider):
    oob_check_target(target=fast_target)
    outside(named_server, fast_target, lambda u: u.replace("api", 300, "A", "198.51.100.1"))
    oob_check_target(target=fast_target)
    assert [e.action for e in out_of_band_changes(user=auditor)] == ["out_of_band_change"]
    assert list(out_of_band_changes(user=author)) == []
    assert list(out_of_band_changes(user=outsider)) == []


def test_the_diff_ignores_only_the_soa_serial_and_the_event_caps_the_diff():
    soa = "ns1.z. hostmaster.z. {} 3600 600 604800 300"
    before = {"z. SOA": {"ttl": 3600, "rdatas": [soa.format(1)]}, "a.z. A": {"ttl": 60, "rdatas": ["192.0.2.1"]}}
    after = {"z. SOA": {"ttl": 3600, "rdatas": [soa.format(9)]}, "a.z. A": {"ttl": 30, "rdatas": ["192.0.2.1"]}}
    assert zone_diff(before, after, kind=kind_named("dns")) == [RRsetDiff(RRKey("a.z.", "A"), RRValue(60, ("192.0.2.1",)),
                                                  RRValue(30, ("192.0.2.1",)))]
    many = [RRsetDiff(RRKey(f"h{i}.z.", "A"), None, RRValue(60, ("192.0.2.1",))) for i in range(DIFF_CAP + 7)]
    baseline = Baseline(version=1, digest="0" * 64, taken_at=timezone.now())
    payload = _event_payload(baseline, 2, "1" * 64, many)
    assert (len(payload["diff"]), payload["total"], payload["added"], payload["truncated"]) == (
        DIFF_CAP, DIFF_CAP + 7, DIFF_CAP + 7, True)


# --- concurrency (PostgreSQL: real row locks, truly concurrent transactions) -------------

on_postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and truly concurrent writers are PostgreSQL's; SQLite serializes whole-database writes",
)
# Real commits: the threads read and write through their own connections.
in_own_connections = pytest.mark.django_db(transaction=True)


def in_threads(count, work):
    """Run work(n) in `count` threads started together; re-raise the first error."""
    start = threading.Barrier(count)
    results, errors = {}, []

    def body(n):
        try:
            start.wait()
            results[n] = work(n)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's own connection

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


@on_postgresql_only
@in_own_connections
def test_overlapping_checks_report_an_outside_change_once(fast_target, named_server):
    oob_check_target(target=fast_target)
    outside(named_server, fast_target, lambda u: u.replace("api", 300, "A", "198.51.100.1"))
    statuses = in_threads(6, lambda n: oob_check_target(target=fast_target).status)
    assert sorted(statuses.values()).count("changed") == 1
    assert len(events("out_of_band_change")) == 1


@on_postgresql_only
@in_own_connections
def test_checks_racing_applies_and_rollbacks_never_report_changegates_own_change(
    author, reviewer, fast_target, monkeypatch
):
    from pipeline import run as execution
    # check that did not skip in-flight targets would see changegate's own change.
    follow = execution.oob_baseline_apply
    monkeypatch.setattr(execution, "oob_baseline_apply", lambda **kw: (time.sleep(0.3), follow(**kw))[1])
    oob_check_target(target=fast_target)
    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.2}
    changes = [approved(author, reviewer, fast_target),
               approved(author, reviewer, fast_target, items=[
                   {"op": "upsert", "name": "api", "type": "A", "ttl": 300, "records": ["192.0.2.77"]}],
                   health_checks=[dead])]
    done = threading.Event()
    seen = []

    def work(n):
        if n == 0:
            try:
                return [run(change) for change in changes]
            finally:
                done.set()
        while not done.is_set():
            seen.append(oob_check_target(target=fast_target).status)
        return None

    outcomes = in_threads(3, work)
    assert outcomes[0] == [State.APPLIED, State.ROLLED_BACK]
    assert "changed" not in seen and events("out_of_band_change") == []
    assert oob_check_target(target=fast_target).status == "unchanged"
    assert events("out_of_band_change") == []

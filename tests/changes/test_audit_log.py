"""The audit log: append-only in the ORM and in the database (SQLite and
PostgreSQL), gap-free under concurrent writers, and signed checkpoints."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import shutil
import stat
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, connections, transaction

from audit.chain import (
    SYSTEM,
    audit_checkpoint_create,
    audit_record,
    audit_signing_key_generate,
    chain_verify,
    checkpoint_record,
    checkpoint_verify,
    event_record,
)
from audit.checkpoints import audit_checkpoint_tick, audit_checkpoints_publish
from changes.management.commands.flush import _append_only_lifted
from changes.models import (
    AppendOnlyError,
    AuditChainHead,
    AuditCheckpoint,
    AuditCheckpointPublication,
    AuditEvent,
    ChangeRequest,
    Target,
)
from changes.services import change_create, change_submit
from pipeline.tasks import audit_checkpoint as audit_checkpoint_task
from tests.factories import WWW

pytestmark = pytest.mark.django_db
# Real commits, for the tests that need them: threads writing through their own
# connections, `flush`, which lifts the triggers around its own statements, and the
# database owner's tampering: PostgreSQL refuses ALTER TABLE and TRUNCATE on a table
# with pending (deferred foreign-key) trigger events, which the test's own open
# transaction would have.
committing = pytest.mark.django_db(transaction=True)
on_postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and truly concurrent writers are PostgreSQL's; SQLite serializes whole-database writes",
)


def record(action: str = "something_happened", **kwargs) -> AuditEvent:
    with transaction.atomic():
        return audit_record(actor=None, origin=SYSTEM, action=action, **kwargs)


def events() -> list[AuditEvent]:
    return list(AuditEvent.objects.order_by("seq"))


@pytest.fixture
def signing_key(tmp_path, settings) -> Ed25519PublicKey:
    path = tmp_path / "audit-signing.pem"
    audit_signing_key_generate(path)
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = str(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key.public_key()


def raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signature_is_valid(line: dict, public_key: Ed25519PublicKey) -> bool:
    """The export format's rule, rebuilt from the line alone (as the offline verifier does)."""
    message = json.dumps({k: line[k] for k in ("seq", "head_hash", "created_at")},
                         sort_keys=True, separators=(",", ":")).encode()
    try:
        public_key.verify(base64.b64decode(line["signature"]), message)
    except InvalidSignature:
        return False
    return True


# --- the database refuses -----------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "UPDATE changes_auditevent SET action = 'nothing_happened' WHERE seq = 1",
    "UPDATE changes_auditevent SET actor_id = NULL",
    "DELETE FROM changes_auditevent WHERE seq = 1",
    "DELETE FROM changes_auditevent",
])
def test_database_refuses_update_and_delete_of_audit_events(statement):
    before = event_record(record())
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert [event_record(e) for e in events()] == [before]


@on_postgresql_only
@committing
def test_postgresql_refuses_truncate_of_the_audit_log():
    record()
    for statement in ("TRUNCATE changes_auditevent", "TRUNCATE changes_target CASCADE"):
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEvent.objects.count() == 1


def test_database_refuses_update_and_delete_of_checkpoints(signing_key):
    record()
    checkpoint = audit_checkpoint_create()
    for statement in ("UPDATE changes_auditcheckpoint SET seq = 7", "DELETE FROM changes_auditcheckpoint"):
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditCheckpoint.objects.get().seq == checkpoint.seq


def test_the_chain_head_row_still_moves():
    record()
    last = record()
    assert AuditChainHead.objects.values_list("seq", "hash").get() == (2, last.hash)


@committing
def test_flush_lifts_the_triggers_only_for_itself():
    record()
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists()
    record()
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM changes_auditevent")


# --- the ORM refuses ------------------------------------------------------------------

def test_orm_refuses_bulk_update_and_delete():
    event = record()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.update(action="nothing_happened")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="nothing_happened")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert event_record(AuditEvent.objects.get()) == event_record(event)


def test_orm_refuses_to_change_checkpoints(signing_key):
    record()
    checkpoint = audit_checkpoint_create()
    with pytest.raises(AppendOnlyError):
        AuditCheckpoint.objects.update(seq=9)
    with pytest.raises(AppendOnlyError):
        AuditCheckpoint.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        checkpoint.delete()


# --- what an event says ---------------------------------------------------------------

def test_a_deleted_user_still_reads_and_the_chain_still_verifies(make_user):
    user = make_user("leaver")
    with transaction.atomic():
        audit_record(actor=user, origin=SYSTEM, action="something_happened")
    user_id = user.pk
    user.delete()
    (event,) = [e for e in events() if e.action == "something_happened"]  # deleting a user is audited too
    assert (event.actor_id, event.actor_username) == (user_id, "leaver")
    assert chain_verify(events()) is None


@pytest.mark.named
def test_event_copies_target_name_and_records_the_outcome(author, dns_target):
    change = change_create(actor=author, target=dns_target, title="Move www", reason="new lb", items=WWW)
    change_submit(actor=author, change=change)
    Target.objects.filter(pk=dns_target.pk).update(name="renamed.test")
    submitted = AuditEvent.objects.get(change=change, action="change_submitted")
    assert submitted.outcome == ChangeRequest.State.PENDING_APPROVAL
    assert submitted.target_name == dns_target.name != "renamed.test"
    assert AuditEvent.objects.get(change=change, action="change_created").outcome == "ok"
    assert chain_verify(events()) is None


def test_export_line_hash_is_the_sha256_of_the_line_without_type_and_hash():
    event = record(payload={"note": "caf\u00e9"}, outcome="refused")
    line = json.loads(json.dumps(event_record(event)))
    assert line["type"] == "event" and line["outcome"] == "refused"
    fields = {k: v for k, v in line.items() if k not in ("type", "hash")}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert hashlib.sha256(canonical).hexdigest() == line["hash"] == event.hash


def test_editing_any_hashed_field_breaks_the_chain():
    record()
    record()
    for field, value in [("outcome", "refused"), ("target_name", "other.test"), ("actor_id", 99)]:
        tampered = events()
        setattr(tampered[0], field, value)
        assert chain_verify(tampered) == 1


# --- concurrent writers ---------------------------------------------------------------

@on_postgresql_only
@committing
def test_concurrent_writers_never_leave_a_gap_or_fork_the_chain():
    writers, per_writer = 8, 50
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                with transaction.atomic():  # each event in its own transaction
                    audit_record(actor=None, origin=SYSTEM, action="concurrent_write", payload={"writer": n, "i": i})
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's own connection

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    chain = events()
    total = writers * per_writer
    assert [e.seq for e in chain] == list(range(1, total + 1))
    assert chain[0].prev_hash == "0" * 64
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(chain))
    assert chain_verify(chain) is None
    assert AuditChainHead.objects.values_list("seq", "hash").get() == (total, chain[-1].hash)
    per = {n: sum(1 for e in chain if e.payload["writer"] == n) for n in range(writers)}
    assert per == dict.fromkeys(range(writers), per_writer)


# --- signed checkpoints ---------------------------------------------------------------

def test_a_checkpoint_every_n_events_signed_with_the_configured_key(signing_key, settings):
    settings.CHANGEGATE_AUDIT_CHECKPOINT_EVERY = 5
    written = [record() for _ in range(12)]
    checkpoints = list(AuditCheckpoint.objects.all())
    assert [(c.seq, c.head_hash) for c in checkpoints] == [(5, written[4].hash), (10, written[9].hash)]
    key_id = hashlib.sha256(raw(signing_key)).hexdigest()[:16]
    for checkpoint in checkpoints:
        line = json.loads(json.dumps(checkpoint_record(checkpoint)))
        assert line["type"] == "checkpoint" and line["key_id"] == key_id
        assert base64.b64decode(line["public_key"]) == raw(signing_key)
        assert signature_is_valid(line, signing_key)
        assert checkpoint_verify(checkpoint, public_key=raw(signing_key))


def test_a_checkpoint_on_demand_signs_the_current_head(signing_key, settings):
    settings.CHANGEGATE_AUDIT_CHECKPOINT_EVERY = 0
    record()
    last = record()
    assert not AuditCheckpoint.objects.exists()
    checkpoint = audit_checkpoint_create()
    assert (checkpoint.seq, checkpoint.head_hash) == (2, last.hash)
    assert signature_is_valid(checkpoint_record(AuditCheckpoint.objects.get()), signing_key)


def test_a_forged_or_foreign_checkpoint_does_not_verify(signing_key):
    record()
    checkpoint = audit_checkpoint_create()
    line = checkpoint_record(checkpoint)
    assert not signature_is_valid({**line, "head_hash": "f" * 64}, signing_key)
    assert not signature_is_valid(line, Ed25519PrivateKey.generate().public_key())
    assert not checkpoint_verify(checkpoint, public_key=raw(Ed25519PrivateKey.generate().public_key()))


def test_a_raw_32_byte_key_file_works_too(tmp_path, settings):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "raw.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption()))
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = str(path)
    record()
    assert signature_is_valid(checkpoint_record(audit_checkpoint_create()), key.public_key())


def test_checkpoints_are_off_without_a_key(settings):
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = ""
    settings.CHANGEGATE_AUDIT_CHECKPOINT_EVERY = 1
    record()
    record()
    assert audit_checkpoint_create() is None
    assert not AuditCheckpoint.objects.exists()


def test_no_checkpoint_of_an_empty_chain(signing_key):
    assert audit_checkpoint_create() is None


def test_an_unusable_key_file_fails_loudly(tmp_path, settings):
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = str(tmp_path / "missing.pem")
    record()
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        audit_checkpoint_create()
    (tmp_path / "garbage.pem").write_bytes(b"not a key")
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = str(tmp_path / "garbage.pem")
    with pytest.raises(ImproperlyConfigured):
        audit_checkpoint_create()


def test_generated_key_file_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "k.pem"
    public = audit_signing_key_generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert base64.b64decode(public) == raw(key.public_key())
    with pytest.raises(FileExistsError):
        audit_signing_key_generate(path)
    assert serialization.load_pem_private_key(path.read_bytes(), password=None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    ) == key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


# --- issue 9, hole 10: a database owner rewrites the chain ------------------------------
#
# Someone who owns the database can lift the append-only triggers (as `flush` does
# for itself) and write whatever they like, recomputing every hash. These tests do
# exactly that, then check what catches it: the checkpoints published out of the
# database, an export the auditor kept, and the in-place `audit_verify`.

VERIFY = [sys.executable, "-m", "changegate_audit.verify", "verify"]


@contextmanager
def database_owner():
    """A cursor with the append-only triggers lifted: what the database's owner has."""
    with transaction.atomic(), _append_only_lifted(connection), connection.cursor() as cursor:
        yield cursor


def rewrite_from(seq: int, *, username: str = "mallory") -> None:
    """Rewrite event `seq` (its actor) and re-hash it and every later event, keep
    `canonical_text` consistent, drop the stored checkpoints from `seq` on and move
    the head: a chain that verifies on its own."""
    chain = events()
    prev = chain[seq - 2].hash if seq > 1 else "0" * 64
    with database_owner() as cursor:
        for event in chain[seq - 1:]:
            if event.seq == seq:
                event.actor_username = username
            event.prev_hash = prev
            canonical = event.canonical()
            event.hash = hashlib.sha256(canonical).hexdigest()
            cursor.execute("UPDATE changes_auditevent SET actor_username = %s, prev_hash = %s, hash = %s, "
                           "canonical_text = %s WHERE seq = %s",
                           [event.actor_username, event.prev_hash, event.hash, canonical.decode(), event.seq])
            prev = event.hash
        cursor.execute("DELETE FROM changes_auditcheckpoint WHERE seq >= %s", [seq])
        cursor.execute("UPDATE changes_auditchainhead SET hash = %s WHERE id = 1", [prev])


def drop_tail(after: int) -> None:
    """Delete every event after `after`, its checkpoints, and move the head back."""
    with database_owner() as cursor:
        cursor.execute("DELETE FROM changes_auditcheckpoint WHERE seq > %s", [after])
        cursor.execute("DELETE FROM changes_auditevent WHERE seq > %s", [after])
        head = AuditEvent.objects.get(seq=after)
        cursor.execute("UPDATE changes_auditchainhead SET seq = %s, hash = %s WHERE id = 1", [after, head.hash])


def export_to(path) -> str:
    call_command("audit_export", output=str(path), stderr=io.StringIO())
    return str(path)


def run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VERIFY, *args], capture_output=True, text=True, check=False)


@pytest.fixture
def published(tmp_path, settings, signing_key) -> dict[str, str]:
    """A signing key, checkpoints every 5 events, published to a file."""
    settings.CHANGEGATE_AUDIT_CHECKPOINT_EVERY = 5
    settings.CHANGEGATE_AUDIT_CHECKPOINT_FILE = str(tmp_path / "published-checkpoints.jsonl")
    settings.CHANGEGATE_AUDIT_CHECKPOINT_WEBHOOK = ""
    pub = tmp_path / "audit-signing.pub"
    pub.write_text(base64.b64encode(raw(signing_key)).decode() + "\n")
    return {"file": settings.CHANGEGATE_AUDIT_CHECKPOINT_FILE, "pub": str(pub)}


@committing
def test_a_rewrite_with_recomputed_hashes_is_caught_by_the_published_checkpoints(published, tmp_path):
    for _ in range(12):
        record()
    assert audit_checkpoints_publish() == {"file": 2}  # the checkpoints at 5 and 10 left the database
    rewrite_from(3)
    clean_on_its_own = run_verify(export_to(tmp_path / "after.jsonl"), "--from-start")
    assert clean_on_its_own.returncode == 0, clean_on_its_own.stdout  # the hole: the chain alone cannot tell

    done = run_verify(str(tmp_path / "after.jsonl"), "--checkpoints", published["file"], "--pubkey", published["pub"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("FAIL seq 5: edited"), done.stdout
    with pytest.raises(CommandError, match="seq 5: edited"):
        call_command("audit_verify", stdout=io.StringIO())


@committing
def test_a_rewrite_is_caught_by_an_earlier_export_naming_the_first_divergent_seq(tmp_path, settings):
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = ""  # the default deployment before issue 9: no key at all
    for _ in range(10):
        record()
    old = export_to(tmp_path / "kept-by-the-auditor.jsonl")
    record()
    rewrite_from(4)
    new = export_to(tmp_path / "new.jsonl")
    done = run_verify(new, "--extends", old)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("FAIL seq 4: edited: event 4 differs from the earlier export"), done.stdout
    with pytest.raises(CommandError, match="seq 4: edited"):
        call_command("audit_verify", extends=old, stdout=io.StringIO())


@committing
def test_a_dropped_tail_is_caught_by_an_earlier_export_and_the_published_checkpoints(published, tmp_path):
    for _ in range(12):
        record()
    audit_checkpoints_publish()
    old = export_to(tmp_path / "kept.jsonl")
    drop_tail(7)
    new = export_to(tmp_path / "cut.jsonl")
    assert run_verify(new, "--from-start").returncode == 0  # a shorter chain is still a chain
    script = shutil.which("changegate-audit", path=str(Path(sys.executable).parent))
    assert script is not None, "pip install -e . installs the changegate-audit console script"
    done = subprocess.run([script, "verify", new, "--extends", old], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stdout.startswith("FAIL seq 8: truncated"), done.stdout + done.stderr
    done = run_verify(new, "--checkpoints", published["file"], "--pubkey", published["pub"])
    assert done.returncode == 1 and done.stdout.startswith("FAIL seq 8: truncated"), done.stdout + done.stderr
    with pytest.raises(CommandError, match="seq 8: truncated"):
        call_command("audit_verify", stdout=io.StringIO())


def test_an_untouched_chain_extends_the_earlier_export_and_matches_what_was_published(published, tmp_path):
    for _ in range(7):
        record()
    old = export_to(tmp_path / "old.jsonl")
    for _ in range(5):
        record()
    call_command("audit_checkpoint", stdout=io.StringIO())  # signs the head (12) and publishes 5, 10, 12
    lines = [json.loads(line) for line in Path(published["file"]).read_text().splitlines()]
    assert [(line["type"], line["seq"]) for line in lines] == [("checkpoint", 5), ("checkpoint", 10),
                                                               ("checkpoint", 12)]
    new = export_to(tmp_path / "new.jsonl")
    done = run_verify(new, "--extends", old, "--checkpoints", published["file"], "--pubkey", published["pub"],
                      "--from-start")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 published checkpoints matched" in done.stdout
    assert "extends the earlier export (seq 1..7)" in done.stdout
    out = io.StringIO()
    call_command("audit_verify", extends=old, stdout=out)
    assert out.getvalue().startswith("OK 12 events")


# --- checkpoints on a timer, published out of the database -------------------------------

def test_the_beat_signs_the_head_on_a_timer_only_when_it_moved(published, settings):
    settings.CHANGEGATE_AUDIT_CHECKPOINT_EVERY = 1000
    schedule = settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert schedule["task"] == "changes.audit_checkpoint"
    assert schedule["schedule"] == settings.CHANGEGATE_AUDIT_CHECKPOINT_SECONDS == 300
    record()
    last = record()
    assert audit_checkpoint_task() == 1  # signed seq 2 and published it
    assert [(c.seq, c.head_hash) for c in AuditCheckpoint.objects.all()] == [(2, last.hash)]
    assert audit_checkpoint_task() == 0  # nothing new: no second checkpoint
    assert AuditCheckpoint.objects.count() == 1
    record()
    assert audit_checkpoint_task() == 1
    assert [c.seq for c in AuditCheckpoint.objects.all()] == [2, 3]


@committing
def test_the_timer_refuses_to_sign_a_head_that_no_longer_extends_the_last_checkpoint(published, caplog):
    for _ in range(5):
        record()  # checkpoint at 5
    with database_owner() as cursor:  # event 5 rewritten, its checkpoint left in place
        cursor.execute("UPDATE changes_auditevent SET hash = %s WHERE seq = 5", ["e" * 64])
        cursor.execute("UPDATE changes_auditchainhead SET hash = %s WHERE id = 1", ["e" * 64])
    record()
    assert audit_checkpoint_tick() is None
    assert "no longer extends the checkpoint at seq 5" in caplog.text
    assert list(AuditCheckpoint.objects.values_list("seq", flat=True)) == [5]


def test_a_failed_publish_is_logged_kept_pending_and_retried(published, settings, tmp_path, caplog):
    settings.CHANGEGATE_AUDIT_CHECKPOINT_FILE = str(tmp_path / "missing-dir" / "checkpoints.jsonl")
    for _ in range(5):
        record()
    assert audit_checkpoints_publish() == {"file": 0}
    marker = AuditCheckpointPublication.objects.get(sink="file")
    assert (marker.checkpoint_id, marker.failures) == (0, 1) and "No such file or directory" in marker.last_error
    assert "not published to the file sink" in caplog.text
    with pytest.raises(CommandError, match="file: .*No such file.*2 failed attempts"):
        call_command("audit_checkpoint", stdout=io.StringIO())  # never reported as done
    (tmp_path / "missing-dir").mkdir()
    assert audit_checkpoints_publish() == {"file": 1}  # the retry sends it
    marker.refresh_from_db()
    assert (marker.failures, marker.last_error) == (0, "")
    assert audit_checkpoints_publish() == {"file": 0}  # once
    assert len((tmp_path / "missing-dir" / "checkpoints.jsonl").read_text().splitlines()) == 1


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 500

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).status == 204:
            type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_checkpoints_are_posted_to_the_webhook_and_retried_until_it_takes_them(published, settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings.CHANGEGATE_AUDIT_CHECKPOINT_FILE = ""
        settings.CHANGEGATE_AUDIT_CHECKPOINT_WEBHOOK = f"http://127.0.0.1:{server.server_address[1]}/cp?token=s3cret"
        _Receiver.received, _Receiver.status = [], 500
        for _ in range(10):
            record()
        assert audit_checkpoints_publish() == {"webhook": 0}
        marker = AuditCheckpointPublication.objects.get(sink="webhook")
        assert marker.last_error == "checkpoint webhook at 127.0.0.1: HTTP 500"  # no URL, no token
        _Receiver.status = 204
        assert audit_checkpoints_publish() == {"webhook": 2}
        assert [(r["type"], r["seq"]) for r in _Receiver.received] == [("checkpoint", 5), ("checkpoint", 10)]
        assert _Receiver.received[0] == checkpoint_record(AuditCheckpoint.objects.get(seq=5))
    finally:
        server.shutdown()
        server.server_close()


def test_audit_keygen_writes_a_private_key_once_and_prints_its_public_key(tmp_path):
    path = tmp_path / "keys" / "audit-signing.pem"
    out = io.StringIO()
    call_command("audit_keygen", str(path), public_out=str(tmp_path / "pub"), stdout=out, stderr=io.StringIO())
    public = out.getvalue().strip()
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert base64.b64decode(public) == raw(key.public_key())
    assert (tmp_path / "pub").read_text().strip() == public
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(CommandError, match="exists"):
        call_command("audit_keygen", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    again = io.StringIO()
    call_command("audit_keygen", str(path), if_missing=True, stdout=again, stderr=io.StringIO())
    assert again.getvalue().strip() == public

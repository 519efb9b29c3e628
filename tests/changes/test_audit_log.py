"""The audit log: append-only in the ORM and in the database (SQLite and
PostgreSQL), gap-free under concurrent writers, and signed checkpoints."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import stat
import threading

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import IntegrityError, connection, connections, transaction

from changes.audit import (
    SYSTEM,
    audit_checkpoint_create,
    audit_record,
    audit_signing_key_generate,
    chain_verify,
    checkpoint_record,
    checkpoint_verify,
    event_record,
)
from changes.models import (
    AppendOnlyError,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    ChangeRequest,
    Target,
)
from changes.services import change_create, change_submit

pytestmark = pytest.mark.django_db(transaction=True)
on_postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and truly concurrent writers are PostgreSQL's; SQLite serializes whole-database writes",
)
WWW = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.99"]}]


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
    with pytest.raises(IntegrityError, match="append-only"), connection.cursor() as cursor:
        cursor.execute(statement)
    assert [event_record(e) for e in events()] == [before]


@on_postgresql_only
def test_postgresql_refuses_truncate_of_the_audit_log():
    record()
    for statement in ("TRUNCATE changes_auditevent", "TRUNCATE changes_target CASCADE"):
        with pytest.raises(IntegrityError, match="append-only"), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEvent.objects.count() == 1


def test_database_refuses_update_and_delete_of_checkpoints(signing_key):
    record()
    checkpoint = audit_checkpoint_create()
    for statement in ("UPDATE changes_auditcheckpoint SET seq = 7", "DELETE FROM changes_auditcheckpoint"):
        with pytest.raises(IntegrityError, match="append-only"), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditCheckpoint.objects.get().seq == checkpoint.seq


def test_the_chain_head_row_still_moves():
    record()
    last = record()
    assert AuditChainHead.objects.values_list("seq", "hash").get() == (2, last.hash)


def test_flush_lifts_the_triggers_only_for_itself():
    record()
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists()
    record()
    with pytest.raises(IntegrityError, match="append-only"), connection.cursor() as cursor:
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
    (event,) = events()
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

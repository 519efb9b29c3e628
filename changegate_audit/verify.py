#!/usr/bin/env python3
"""changegate-audit verify: check a JSON Lines export of changegate's audit log
offline, with the standard library and `cryptography` only (no Django, no
server code; this file also runs on its own as a script).

    changegate-audit verify FILE [--pubkey KEY] [--checkpoint OLD] [--extends OLD_EXPORT]
                                 [--checkpoints PUBLISHED] [--from-start]

The export (format `changegate-audit/1`, see docs/audit.md) is one JSON object
per line:

- event lines, `{"type": "event", "seq", "created_at", "actor_id",
  "actor_username", "origin", "client_ip", "user_agent", "action", "target_id",
  "target_name", "change_id", "outcome", "payload", "prev_hash", "hash"}`, where
  `hash` is the hex SHA-256 of the canonical JSON of every key but `type` and
  `hash` (any key the writer adds is covered too), `prev_hash` is the hash of the
  event before (64 zeros before seq 1), and `seq` counts up by one;
- checkpoint lines, `{"type": "checkpoint", "seq", "head_hash", "created_at",
  "key_id", "public_key", "signature"}`: an Ed25519 signature over
  `{"created_at", "head_hash", "seq"}` asserting that event `seq` has hash
  `head_hash`;
- withheld lines, `{"type": "withheld", "seq", "prev_hash", "hash"}`: an event the
  export leaves out (outside the exporting auditor's scope, or not matching the
  export's filter) stands in the chain as its link alone, with no content. Its hash
  cannot be recomputed (the content is withheld), but the next line must chain to
  it, so the chain still verifies end to end; the verifier counts them
  (`OK N events, M withheld`). Content may be withheld, never changed: an event
  line's hash is recomputed as always;
- column_mismatch lines, `{"type": "column_mismatch", "seq", "fields"}`: the
  server found that its database row for event `seq` no longer says what the
  hashed record says (the event line shows the hashed record). Always a failure.

A chain that verifies on its own can still have been rewritten from some point
on (every hash recomputed) or cut short. What the auditor kept outside the
server's database shows it: `--extends` an earlier export (every event of it
must be here unchanged, and none of its tail missing) and `--checkpoints` the
file of checkpoints the server published (each must match this export's event
at its seq, and none may lie beyond its end).

The verifier recomputes every hash and every link and prints either
`OK N events, head <hash>` (exit 0) or the first bad sequence number and why
(exit 1): edited, missing, reordered, inserted, truncated, malformed, or
signature. Usage errors and unreadable files exit 2.

Memory stays constant in the number of events: the file is read twice as a
stream (first the checkpoint lines, then the chain); only the previous event and
the checkpoints' (seq, head_hash) are kept.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "changegate-audit/1"
GENESIS_HASH = "0" * 64

# Keys every line of a kind must have. The hash covers whatever keys an event line
# carries (minus "type" and "hash"), so a writer that adds one stays verifiable.
EVENT_KEYS = (
    "seq", "created_at", "actor_id", "actor_username", "origin", "client_ip", "user_agent",
    "action", "target_id", "target_name", "change_id", "outcome", "payload", "prev_hash", "hash",
)
CHECKPOINT_KEYS = ("seq", "head_hash", "created_at", "key_id", "public_key", "signature")

# Why verification failed (the word after the sequence number).
EDITED = "edited"  # a line's content no longer matches its hash, or a rewritten, re-hashed event
MISSING = "missing"  # the sequence jumps forward: events were deleted
REORDERED = "reordered"  # events out of order (moved, swapped)
INSERTED = "inserted"  # an extra event: a seq that appears twice, or a line the chain continues without
TRUNCATED = "truncated"  # the export ends before an event a checkpoint vouches for, or mid-line
MALFORMED = "malformed"  # not JSON, not an object, unknown line type, a required key missing
SIGNATURE = "signature"  # a checkpoint whose signature or key does not check out
TAMPERED = "tampered"  # the server's row for an event disagrees with its hashed record (column_mismatch line)
REASONS = (EDITED, MISSING, REORDERED, INSERTED, TRUNCATED, MALFORMED, SIGNATURE, TAMPERED)

EARLIER = "the earlier checkpoint (--checkpoint)"
PUBLISHED = "the published checkpoint"  # label prefix of --checkpoints entries

# Kinds of lines.
_EVENT = "event"
_CHECKPOINT = "checkpoint"
_BAD = "bad"
_PARTIAL = "partial"
_MISMATCH = "column_mismatch"
_WITHHELD = "withheld"
# Line kinds that hold a place in the chain (an event with its content, or its link alone).
_LINKS = (_EVENT, _WITHHELD)


class UsageError(Exception):
    """Bad arguments or an unreadable input: exit status 2."""


@dataclass(frozen=True)
class Failure:
    """The first place the export stops being the chain it claims to be."""

    seq: int | None  # the first bad sequence number (None only when it cannot be known)
    reason: str  # one of REASONS
    detail: str
    line: int | None = None  # 1-based line of the file, None at the end of the file

    def __str__(self) -> str:
        where = f"FAIL seq {self.seq}" if self.seq is not None else "FAIL"
        at = f" (line {self.line})" if self.line is not None else " (at the end of the file)"
        return f"{where}: {self.reason}: {self.detail}{at}"


@dataclass
class Result:
    events: int = 0  # places in the chain, withheld ones included
    withheld: int = 0  # of which only the link was exported (withheld lines)
    head: str | None = None  # hash of the last event
    first_seq: int | None = None
    last_seq: int | None = None
    first_prev_hash: str | None = None  # what the first event chains to
    checkpoints_verified: int = 0  # checkpoint lines of the file matched against their event
    checkpoints_outside: int = 0  # checkpoint lines before the export's first event (not comparable)
    earlier_checkpoint: int | None = None  # seq of --checkpoint, when it matched
    checkpoints_published: int = 0  # --checkpoints entries matched against their event
    published_outside: int = 0  # --checkpoints entries before the export's first event
    extends: tuple[int, int] | None = None  # (first, last) seq of the --extends export it extends
    key_ids: set[str] = field(default_factory=set)  # keys that signed the file's checkpoints
    pinned_key: bool = False  # --pubkey was given
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def report(self) -> list[str]:
        if self.failure is not None:
            return [str(self.failure)]
        withheld = f" ({self.withheld} withheld: link only, content not exported)" if self.withheld else ""
        head = f"OK {self.events} events{withheld}, head {self.head or 'none'}"
        if self.checkpoints_verified:
            head += f", {self.checkpoints_verified} checkpoints verified"
        lines = [head]
        if self.events:
            if self.first_seq == 1 and self.first_prev_hash == GENESIS_HASH:
                lines.append(f"seq 1..{self.last_seq}, from the start of the chain")
            else:
                lines.append(f"seq {self.first_seq}..{self.last_seq}, a partial export: "
                             f"its first event chains to prev_hash {self.first_prev_hash}")
        if self.earlier_checkpoint is not None:
            lines.append(f"the earlier checkpoint at seq {self.earlier_checkpoint} matches: "
                         "this export extends that history")
        if self.checkpoints_published:
            lines.append(f"{self.checkpoints_published} published checkpoints matched (--checkpoints)")
        if self.published_outside:
            lines.append(f"{self.published_outside} published checkpoint(s) before seq {self.first_seq} not compared")
        if self.extends is not None:
            lines.append(f"this export extends the earlier export (seq {self.extends[0]}..{self.extends[1]}): "
                         "every event of it is here unchanged")
        if self.checkpoints_outside:
            lines.append(f"{self.checkpoints_outside} checkpoint(s) before seq {self.first_seq} not compared")
        if self.key_ids and not self.pinned_key:
            lines.append("checkpoints were checked against the public key in each line (key_id "
                         + ", ".join(sorted(self.key_ids))
                         + "); pass --pubkey to require changegate's key")
        return lines


# ---------------------------------------------------------------------------
# The canonical forms (they must equal changes.models.canonical_event and
# checkpoint_message, which write what this reads)


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def event_hash(record: dict[str, Any]) -> str:
    """The hash an event line should carry: over every key but "type" and "hash"."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "type" and k != "hash"})).hexdigest()


def checkpoint_message(*, seq: int, head_hash: str, created_at: str) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return json.dumps({"seq": seq, "head_hash": head_hash, "created_at": created_at},
                      sort_keys=True, separators=(",", ":")).encode()


def key_id(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Keys and checkpoints


def _b64(value: str) -> bytes:
    return base64.b64decode(value.strip(), validate=True)


def parse_public_key(data: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key in `data`: a PEM public key, an OpenSSH
    `ssh-ed25519` line, base64 or hex of the raw key, or the raw 32 bytes."""
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in stripped:
            raise ValueError("this is a private key; give the public key (the verifier needs no secret)")
        try:
            key = serialization.load_pem_public_key(stripped)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if stripped.startswith(b"ssh-ed25519 "):
        try:
            key = serialization.load_ssh_public_key(stripped)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not an OpenSSH public key ({exc})") from None
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[union-attr]
    for decode in (lambda text: base64.b64decode(text, validate=True), bytes.fromhex):
        try:
            raw = decode(stripped.decode("ascii"))
        except (UnicodeDecodeError, binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            return raw
    if len(data) == 32:
        return data
    raise ValueError("not an Ed25519 public key (PEM, ssh-ed25519, base64 or hex of the raw 32 bytes)")


def load_public_key(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 16)
    except OSError as exc:
        raise UsageError(f"--pubkey {path}: {exc.strerror or exc}") from None
    try:
        return parse_public_key(data)
    except ValueError as exc:
        raise UsageError(f"--pubkey {path}: {exc}") from None


def checkpoint_structure_problem(obj: dict[str, Any]) -> str | None:
    missing = [key for key in CHECKPOINT_KEYS if key not in obj]
    if missing:
        return "checkpoint line without " + ", ".join(missing)
    if type(obj["seq"]) is not int:
        return "checkpoint seq is not an integer"
    for key in CHECKPOINT_KEYS[1:]:
        if not isinstance(obj[key], str):
            return f"checkpoint {key} is not a string"
    try:
        raw = _b64(obj["public_key"])
    except (binascii.Error, ValueError):
        return "checkpoint public_key is not base64"
    if len(raw) != 32:
        return "checkpoint public_key is not a raw 32-byte Ed25519 key"
    return None


def checkpoint_problem(obj: dict[str, Any], trusted: bytes | None) -> tuple[str, str] | None:
    """(reason, detail) when a checkpoint line does not check out, else None."""
    problem = checkpoint_structure_problem(obj)
    if problem:
        return MALFORMED, problem
    raw = _b64(obj["public_key"])
    if obj["key_id"] != key_id(raw):
        return SIGNATURE, f"checkpoint key_id {obj['key_id']!r} is not the id of its public_key ({key_id(raw)})"
    try:
        signature = _b64(obj["signature"])
        message = checkpoint_message(seq=obj["seq"], head_hash=obj["head_hash"], created_at=obj["created_at"])
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except (InvalidSignature, binascii.Error, ValueError):
        return SIGNATURE, f"checkpoint signature does not verify (key_id {obj['key_id']})"
    if trusted is not None and raw != trusted:
        return SIGNATURE, (f"checkpoint signed by unknown key (key_id {obj['key_id']}, "
                           f"expected {key_id(trusted)} from --pubkey)")
    return None


def load_checkpoint_file(path: str) -> dict[str, Any]:
    """The checkpoint in OLD: a file holding one checkpoint line, or an earlier
    export (its checkpoint with the highest seq is used)."""
    best: dict[str, Any] | None = None
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                if b"checkpoint" not in raw:
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError):
                    continue
                if not isinstance(obj, dict) or obj.get("type") != "checkpoint":
                    continue
                problem = checkpoint_structure_problem(obj)
                if problem:
                    raise UsageError(f"--checkpoint {path}: {problem}")
                if best is None or obj["seq"] >= best["seq"]:
                    best = obj
    except OSError as exc:
        raise UsageError(f"--checkpoint {path}: {exc.strerror or exc}") from None
    if best is None:
        raise UsageError(f"--checkpoint {path}: no checkpoint line in it")
    return best


def load_published_checkpoints(path: str) -> list[dict[str, Any]]:
    """Every checkpoint line of a published checkpoint file (the JSON Lines file
    CHANGEGATE_AUDIT_CHECKPOINT_FILE names, or what the webhook received, one per
    line). Blank lines are skipped; anything else that is not a checkpoint line
    makes the file unusable (exit 2)."""
    found: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError):
                    raise UsageError(f"--checkpoints {path}: line {number} is not JSON") from None
                if not isinstance(obj, dict) or obj.get("type") != "checkpoint":
                    raise UsageError(f"--checkpoints {path}: line {number} is not a checkpoint line")
                problem = checkpoint_structure_problem(obj)
                if problem:
                    raise UsageError(f"--checkpoints {path}: line {number}: {problem}")
                found.append(obj)
    except OSError as exc:
        raise UsageError(f"--checkpoints {path}: {exc.strerror or exc}") from None
    if not found:
        raise UsageError(f"--checkpoints {path}: no checkpoint line in it")
    return found


def has_checkpoint_line(path: str) -> bool:
    """Whether the file holds a checkpoint line (else an earlier export given as
    --checkpoint is compared whole, as --extends)."""
    try:
        with open(path, "rb") as handle:
            return any(b'"checkpoint"' in raw and b'"type"' in raw for raw in handle)
    except OSError as exc:
        raise UsageError(f"--checkpoint {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------
# Reading lines


def _event_problem(obj: dict[str, Any]) -> str | None:
    missing = [key for key in EVENT_KEYS if key not in obj]
    if missing:
        return "event line without " + ", ".join(missing)
    if type(obj["seq"]) is not int:
        return "event seq is not an integer"
    if not isinstance(obj["prev_hash"], str) or not isinstance(obj["hash"], str):
        return "event prev_hash or hash is not a string"
    return None


def _withheld_problem(obj: dict[str, Any]) -> str | None:
    if type(obj.get("seq")) is not int:
        return "withheld line without an integer seq"
    if not isinstance(obj.get("prev_hash"), str) or not isinstance(obj.get("hash"), str):
        return "withheld line without prev_hash and hash strings"
    extra = sorted(set(obj) - {"type", "seq", "prev_hash", "hash"})
    if extra:  # a link record carries no content: anything more is not this format
        return "withheld line with content fields: " + ", ".join(extra)
    return None


def _lines(stream: BinaryIO) -> Iterator[tuple[int, str, Any, str]]:
    """(line number, kind, parsed object, problem) for each line."""
    number = 0
    for raw in stream:
        number += 1
        try:
            obj = json.loads(raw.decode("utf-8"))  # a trailing "\n" (or "\r\n") is JSON whitespace
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            if raw.endswith(b"\n"):
                yield number, _BAD, None, f"not a JSON line ({type(exc).__name__})"
            else:  # the last line, cut off
                yield number, _PARTIAL, None, "the file ends in the middle of a line: the export was cut short"
            continue
        if not isinstance(obj, dict):
            yield number, _BAD, None, "not a JSON object"
            continue
        kind = obj.get("type")
        if kind == "event":
            problem = _event_problem(obj)
            yield (number, _BAD, obj, problem) if problem else (number, _EVENT, obj, "")
        elif kind == "checkpoint":
            yield number, _CHECKPOINT, obj, ""
        elif kind == _WITHHELD:
            problem = _withheld_problem(obj)
            yield (number, _BAD, obj, problem) if problem else (number, _WITHHELD, obj, "")
        elif kind == _MISMATCH:
            fields = obj.get("fields")
            if type(obj.get("seq")) is not int or not isinstance(fields, list):
                yield number, _BAD, obj, "column_mismatch line without an integer seq and a list of fields"
            else:
                yield number, _MISMATCH, obj, ""
        else:
            yield number, _BAD, obj, f"unknown line type {kind!r}"


def _peek_events(lines: Iterator[tuple[int, str, Any, str]], count: int) -> list[dict[str, Any]]:
    """Up to `count` next event lines, skipping checkpoints, stopping at a bad line.
    Only used once a failure is certain, to tell its kind: nothing is put back."""
    found: list[dict[str, Any]] = []
    for _number, kind, obj, _problem in lines:
        if kind == _CHECKPOINT:
            continue
        if kind not in _LINKS:
            break
        found.append(obj)
        if len(found) == count:
            break
    return found


def _collect_checkpoints(stream: BinaryIO, trusted: bytes | None, result: Result) -> tuple[
        dict[int, list[tuple[str, str]]], dict[int, Failure]]:
    """First pass: seq -> [(head_hash, label)] of the good checkpoint lines, and the
    failure of each bad one by line number."""
    claims: dict[int, list[tuple[str, str]]] = {}
    bad: dict[int, Failure] = {}
    for number, raw in enumerate(stream, 1):
        if b"checkpoint" not in raw:
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue  # the second pass reports it in its place
        if not isinstance(obj, dict) or obj.get("type") != "checkpoint":
            continue
        problem = checkpoint_problem(obj, trusted)
        seq = obj.get("seq") if type(obj.get("seq")) is int else None
        if problem is not None:
            bad[number] = Failure(seq, problem[0], problem[1], number)
            continue
        claims.setdefault(obj["seq"], []).append((obj["head_hash"], f"the checkpoint on line {number}"))
        result.key_ids.add(obj["key_id"])
    return claims, bad


# ---------------------------------------------------------------------------
# The chain


@dataclass
class _Walk:
    claims: dict[int, list[tuple[str, str]]]
    bad_checkpoints: dict[int, Failure]
    result: Result
    from_start: bool
    earlier: dict[str, Any] | None

    def run(self, stream: BinaryIO) -> Failure | None:
        result = self.result
        lines = _lines(stream)
        # The previous event: a virtual seq 0 with the genesis hash when the export
        # must start the chain, else the first event anchors a partial export.
        prev_seq: int | None = 0 if self.from_start else None
        prev_hash: str | None = GENESIS_HASH if self.from_start else None
        prev_line = 0
        for number, kind, obj, problem in lines:
            expected = None if prev_seq is None else prev_seq + 1
            if kind == _CHECKPOINT:
                bad = self.bad_checkpoints.get(number)
                if bad is not None:
                    return bad if bad.seq is not None else Failure(expected, bad.reason, bad.detail, number)
                continue
            if kind == _PARTIAL:
                return Failure(expected, TRUNCATED, problem, number)
            if kind == _MISMATCH:
                fields = ", ".join(str(name) for name in obj["fields"])
                return Failure(obj["seq"], TAMPERED, f"the server's database row for event {obj['seq']} disagrees "
                               f"with its hashed record in {fields}: its columns were edited behind the hash "
                               "(the event line shows the hashed record)", number)
            if kind == _BAD:
                seq = expected
                if seq is None and isinstance(obj, dict) and type(obj.get("seq")) is int:
                    seq = obj["seq"]
                return Failure(seq, MALFORMED, problem, number)

            seq, link, own = obj["seq"], obj["prev_hash"], obj["hash"]
            if kind == _EVENT and event_hash(obj) != own:
                return Failure(expected if expected is not None else seq, EDITED,
                               "the line's content does not match its hash (altered after it was written)", number)
            if prev_seq is not None:
                if seq != expected:
                    return self._out_of_sequence(lines, obj, number, prev_seq, prev_hash, prev_line)
                if link != prev_hash:
                    return self._broken_link(lines, obj, number, prev_seq, prev_hash, prev_line)
            if result.first_seq is None:
                result.first_seq, result.first_prev_hash = seq, link
            known = self.claims.get(seq)
            if known:
                failure = self._against_checkpoints(lines, obj, number, known)
                if failure is not None:
                    return failure
            prev_seq, prev_hash, prev_line = seq, own, number
            result.events += 1
            result.withheld += kind == _WITHHELD
        if result.events:
            result.head, result.last_seq = prev_hash, prev_seq
        return self._at_end(prev_seq if result.events or self.from_start else None)

    def _against_checkpoints(self, lines: Iterator[tuple[int, str, Any, str]], obj: dict[str, Any],
                             number: int, known: list[tuple[str, str]]) -> Failure | None:
        seq, own = obj["seq"], obj["hash"]
        for head, label in known:
            if head != own:
                after = _peek_events(lines, 1)
                if after and after[0]["seq"] == seq:
                    return Failure(seq, INSERTED, f"two events claim seq {seq}; the one on line {number} is not "
                                   f"the one {label} signed: a forged extra event", number)
                return Failure(seq, EDITED, f"its hash {own} is not the head_hash {head} signed by {label}: "
                               f"the history up to seq {seq} was rewritten", number)
        for _head, label in known:
            if label == EARLIER:
                self.result.earlier_checkpoint = seq
            elif label.startswith(PUBLISHED):
                self.result.checkpoints_published += 1
            else:
                self.result.checkpoints_verified += 1
        return None

    def _out_of_sequence(self, lines: Iterator[tuple[int, str, Any, str]], obj: dict[str, Any], number: int,
                         prev_seq: int, prev_hash: str | None, prev_line: int) -> Failure:
        seq, expected = obj["seq"], prev_seq + 1
        if seq > expected:
            ahead = _peek_events(lines, 2)
            if ahead and ahead[0]["seq"] < seq:
                nxt = ahead[0]
                # The chain goes on from prev through the next two events as if this
                # line were not there: it is an extra line, not a displaced one.
                if (nxt["seq"] == expected and nxt["prev_hash"] == prev_hash and len(ahead) > 1
                        and ahead[1]["seq"] == expected + 1 and ahead[1]["prev_hash"] == nxt["hash"]):
                    return Failure(seq, INSERTED, f"a line claiming seq {seq} stands between seq {prev_seq} and "
                                   f"seq {expected}, and the chain continues without it: an extra event", number)
                return Failure(expected, REORDERED, f"expected seq {expected}, found seq {seq} and then seq "
                               f"{nxt['seq']}: events are out of order", number)
            missing = seq - expected
            span = f"seq {expected}" if missing == 1 else f"seq {expected}..{seq - 1}"
            return Failure(expected, MISSING, f"the sequence jumps from {prev_seq} to {seq}: {span} "
                           f"({missing} event{'s' if missing > 1 else ''}) deleted", number)
        first = self.result.first_seq
        if first is not None and first <= seq:
            if seq == prev_seq:
                return Failure(seq, INSERTED, f"two events claim seq {seq} (lines {prev_line} and {number}): "
                               "one of them is a forged or replayed extra event", number)
            return Failure(seq, INSERTED, f"seq {seq} appears again after seq {prev_seq}: "
                           "a replayed or forged extra event", number)
        return Failure(expected, REORDERED, f"expected seq {expected}, found seq {seq}: the sequence goes back",
                       number)

    def _broken_link(self, lines: Iterator[tuple[int, str, Any, str]], obj: dict[str, Any], number: int,
                     prev_seq: int, prev_hash: str | None, prev_line: int) -> Failure:
        """The event has the right seq and is self-consistent, but its prev_hash is
        not the previous event's hash: one of the two was rewritten and re-hashed,
        or this is a forged extra event."""
        seq, link, own = obj["seq"], obj["prev_hash"], obj["hash"]
        ahead = _peek_events(lines, 1)
        nxt = ahead[0] if ahead else None
        if nxt is not None and nxt["seq"] == seq:
            return Failure(seq, INSERTED, f"two events claim seq {seq}; the one on line {number} does not chain to "
                           f"seq {prev_seq} (its prev_hash points elsewhere): a forged extra event", number)
        vouched = any(head == own for head, _label in self.claims.get(seq, ()))
        followed = nxt is not None and nxt["seq"] == seq + 1 and nxt["prev_hash"] == own
        if (vouched or followed) and self.result.events:
            # This event fits what comes after it: the previous one is the forgery.
            return Failure(prev_seq, EDITED, f"event {prev_seq} was rewritten and re-hashed: event {seq} "
                           f"(line {number}) records prev_hash {link}, not its hash {prev_hash}", prev_line)
        before = f"event {prev_seq}" if self.result.events else "the start of the chain"
        return Failure(seq, EDITED, f"event {seq} does not chain to {before}: its prev_hash is {link}, "
                       f"expected {prev_hash} (rewritten and re-hashed)", number)

    def _at_end(self, last_seq: int | None) -> Failure | None:
        result = self.result
        beyond = sorted(seq for seq in self.claims if last_seq is None or seq > last_seq)
        if beyond:
            seq = beyond[0]
            label = self.claims[seq][0][1]
            if last_seq is None:
                return Failure(seq, TRUNCATED, f"{label} vouches for seq {seq} but the export has no events")
            ends = f"ends at seq {last_seq}" if last_seq else "has no events"
            return Failure(last_seq + 1, TRUNCATED, f"{label} vouches for seq {seq} but the export {ends}: "
                           "its tail was cut off")
        first = result.first_seq
        if self.earlier is not None and first is not None and self.earlier["seq"] < first:
            return Failure(self.earlier["seq"], MISSING, f"the export starts at seq {first}, after seq "
                           f"{self.earlier['seq']} of {EARLIER}: it cannot show that it extends that history")
        if first is not None:
            result.checkpoints_outside = sum(1 for seq, known in self.claims.items() if seq < first
                                             for _head, label in known
                                             if label != EARLIER and not label.startswith(PUBLISHED))
            result.published_outside = sum(1 for seq, known in self.claims.items() if seq < first
                                           for _head, label in known if label.startswith(PUBLISHED))
        return None


def verify_stream(open_stream: Callable[[], BinaryIO], *, pubkey: bytes | None = None,
                  checkpoint: dict[str, Any] | None = None, checkpoints: list[dict[str, Any]] | None = None,
                  extends: Callable[[], BinaryIO] | None = None, from_start: bool = False) -> Result:
    """Verify the export that `open_stream()` opens (called two or three times: passes).

    `pubkey`: raw 32-byte Ed25519 key every checkpoint must be signed with.
    `checkpoint`: a checkpoint from an earlier export this one must extend.
    `checkpoints`: the published checkpoints (kept outside the server's database):
    each one at or after the export's first event must match it, none may lie
    beyond its end.
    `extends`: opens an earlier export this one must extend: every event of it
    unchanged here, the tail not dropped. Raises UsageError when that earlier
    export is itself not intact.
    `from_start`: the export must begin the chain (seq 1 after 64 zeros)."""
    result = Result(pinned_key=pubkey is not None)
    with open_stream() as stream:
        claims, bad_checkpoints = _collect_checkpoints(stream, pubkey, result)
    if checkpoint is not None:
        problem = checkpoint_problem(checkpoint, pubkey)
        if problem is not None:
            result.failure = Failure(checkpoint["seq"], problem[0],
                                     f"{EARLIER}: {problem[1]}")
            return result
        claims.setdefault(checkpoint["seq"], []).append((checkpoint["head_hash"], EARLIER))
    for published in checkpoints or ():
        label = f"{PUBLISHED} at seq {published['seq']} (--checkpoints)"
        problem = checkpoint_problem(published, pubkey)
        if problem is not None:
            result.failure = Failure(published["seq"], problem[0], f"{label}: {problem[1]}")
            return result
        claims.setdefault(published["seq"], []).append((published["head_hash"], label))
    walk = _Walk(claims, bad_checkpoints, result, from_start, checkpoint)
    with open_stream() as stream:
        result.failure = walk.run(stream)
    if result.failure is None and extends is not None:
        with open_stream() as new, extends() as old:
            result.failure = _extends_problem(new, old, result)
    return result


def _events_of(stream: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every place in the chain (withheld ones compare by hash like the rest)."""
    for number, kind, obj, _problem in _lines(stream):
        if kind in _LINKS:
            yield number, obj


def _extends_problem(new: BinaryIO, old: BinaryIO, result: Result) -> Failure | None:
    """Whether the (already verified) export `new` extends the earlier export `old`:
    a merge of the two seq-ordered streams, constant memory. Every event of `old`
    from `new`'s first seq on must be in `new` with the same hash (so the same
    content: `new`'s hashes are verified), `new` must start no later than right
    after `old`'s last event and chain onto it, and `new` must not end before
    `old` does (a dropped tail). Fails at the first divergent seq."""
    new_events = _events_of(new)
    current = next(new_events, None)
    first_old = last_old = last_old_hash = None
    before_first: str | None = None  # hash of old's event just before new's first event
    for number, old_event in _events_of_checked(old):
        seq = old_event["seq"]
        if first_old is None:
            first_old = seq
        last_old, last_old_hash = seq, old_event["hash"]
        if current is None:
            continue  # new is empty or exhausted: judged below, once old's last seq is known
        if seq < current[1]["seq"]:
            if seq == current[1]["seq"] - 1:
                before_first = old_event["hash"]
            continue  # before new's first event (a partial export of a later period)
        while current is not None and current[1]["seq"] < seq:
            current = next(new_events, None)
        if current is None:
            continue
        line, event = current
        if event["hash"] != old_event["hash"]:
            return Failure(seq, EDITED, f"event {seq} differs from the earlier export (hash {old_event['hash']} "
                           f"there, {event['hash']} here): the history was rewritten from seq {seq} on", line)
    if last_old is None:
        raise UsageError("the earlier export (--extends) holds no event")
    first_new, last_new = result.first_seq, result.last_seq
    if first_new is None or last_new is None or last_new < last_old:
        ends = f"ends at seq {last_new}" if last_new is not None else "has no events"
        start = (last_new or 0) + 1
        return Failure(start, TRUNCATED, f"the earlier export reaches seq {last_old} but this export {ends}: "
                       "its tail was dropped")
    if first_new > last_old + 1:
        return Failure(last_old + 1, MISSING, f"this export starts at seq {first_new}, after seq {last_old + 1}: "
                       "it cannot show that it extends the earlier export")
    if first_new > first_old:
        anchor = last_old_hash if first_new == last_old + 1 else before_first
        if result.first_prev_hash != anchor:
            return Failure(first_new, EDITED, f"event {first_new} chains to prev_hash {result.first_prev_hash}, "
                           f"not to event {first_new - 1} of the earlier export ({anchor})")
    result.extends = (first_old, last_old)
    return None


def _events_of_checked(stream: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """The earlier export's events, each checked against its own hash and its
    predecessor: an earlier export that is not intact proves nothing (exit 2)."""
    prev: dict[str, Any] | None = None
    for number, kind, obj, problem in _lines(stream):
        if kind == _CHECKPOINT:
            continue
        if kind not in _LINKS:
            raise UsageError(f"the earlier export (--extends) is not intact: line {number}: {problem or kind}")
        if (kind == _EVENT and event_hash(obj) != obj["hash"]) or (prev is not None and (
                obj["seq"] != prev["seq"] + 1 or obj["prev_hash"] != prev["hash"])):
            raise UsageError(f"the earlier export (--extends) is not intact at seq {obj['seq']} (line {number}); "
                             "verify it on its own first")
        prev = obj
        yield number, obj


def _file_opener(path: str, label: str) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        try:
            return open(path, "rb", buffering=1 << 20)
        except OSError as exc:
            raise UsageError(f"{label}{path}: {exc.strerror or exc}") from None

    return opener


def verify_file(path: str, *, extends: str | None = None, **options: Any) -> Result:
    """Verify the export in `path`; `extends` is the path of an earlier export (see verify_stream)."""
    earlier = _file_opener(extends, "--extends ") if extends is not None else None
    try:
        return verify_stream(lambda: open(path, "rb", buffering=1 << 20), extends=earlier, **options)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


def verify_bytes(data: bytes, *, extends: bytes | None = None, **options: Any) -> Result:
    opener = (lambda: io.BytesIO(extends)) if extends is not None else None
    return verify_stream(lambda: io.BytesIO(data), extends=opener, **options)


# ---------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="changegate-audit", description="Offline tools for changegate's audit log exports.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify", help="recompute the hash chain of a JSON Lines export and check its checkpoints",
        description="Recompute the hash chain of a JSON Lines audit export and check its signed checkpoints. "
                    "Prints 'OK N events, head <hash>' (with 'M withheld' when the export left events out as "
                    "link records) and exits 0, or the first bad sequence number and why "
                    "(edited, missing, reordered, inserted, truncated, malformed, signature) and exits 1. "
                    "Exit 2: usage error or unreadable file.")
    verify.add_argument("file", metavar="FILE", help="the JSON Lines export")
    verify.add_argument("--pubkey", metavar="KEY",
                        help="changegate's checkpoint public key (PEM, ssh-ed25519, or base64 of the raw 32 bytes); "
                             "every checkpoint must be signed with it")
    verify.add_argument("--checkpoint", metavar="OLD",
                        help="a checkpoint line kept from an earlier export (or that export): this export must "
                             "contain its event with its hash")
    verify.add_argument("--extends", metavar="OLD_EXPORT",
                        help="an earlier export you kept: every event of it must be in this export unchanged, "
                             "and this export must reach at least as far (fails naming the first divergent seq)")
    verify.add_argument("--checkpoints", metavar="PUBLISHED",
                        help="the checkpoint file the server published outside its database "
                             "(CHANGEGATE_AUDIT_CHECKPOINT_FILE, one checkpoint line per line): each must match "
                             "this export's event at its seq, and none may lie beyond its end")
    verify.add_argument("--from-start", action="store_true",
                        help="the export must begin the chain (seq 1, prev_hash of 64 zeros)")
    return parser


def _has_event_line(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return any(b'"event"' in raw for raw in handle)
    except OSError as exc:
        raise UsageError(f"--checkpoint {path}: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pubkey = load_public_key(args.pubkey) if args.pubkey else None
        extends = args.extends
        earlier = None
        if args.checkpoint:
            # An earlier export taken without a signing key has no checkpoint
            # line: compare it whole instead (what --extends does).
            if extends is None and not has_checkpoint_line(args.checkpoint) and _has_event_line(args.checkpoint):
                extends = args.checkpoint
            else:
                earlier = load_checkpoint_file(args.checkpoint)
        published = load_published_checkpoints(args.checkpoints) if args.checkpoints else None
        result = verify_file(args.file, pubkey=pubkey, checkpoint=earlier, checkpoints=published, extends=extends,
                             from_start=args.from_start)
    except UsageError as exc:
        print(f"changegate-audit: {exc}", file=sys.stderr)
        return 2
    for line in result.report():
        print(line)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

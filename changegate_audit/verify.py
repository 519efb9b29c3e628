#!/usr/bin/env python3
"""changegate-audit verify: check a JSON Lines export of changegate's audit log
offline, with the standard library and `cryptography` only (no Django, no
server code; this file also runs on its own as a script).

    changegate-audit verify FILE [--pubkey KEY] [--checkpoint OLD] [--from-start]

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
  `head_hash`.

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
REASONS = (EDITED, MISSING, REORDERED, INSERTED, TRUNCATED, MALFORMED, SIGNATURE)

EARLIER = "the earlier checkpoint (--checkpoint)"

# Kinds of lines.
_EVENT = "event"
_CHECKPOINT = "checkpoint"
_BAD = "bad"
_PARTIAL = "partial"


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
    events: int = 0
    head: str | None = None  # hash of the last event
    first_seq: int | None = None
    last_seq: int | None = None
    first_prev_hash: str | None = None  # what the first event chains to
    checkpoints_verified: int = 0  # checkpoint lines of the file matched against their event
    checkpoints_outside: int = 0  # checkpoint lines before the export's first event (not comparable)
    earlier_checkpoint: int | None = None  # seq of --checkpoint, when it matched
    key_ids: set[str] = field(default_factory=set)  # keys that signed the file's checkpoints
    pinned_key: bool = False  # --pubkey was given
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def report(self) -> list[str]:
        if self.failure is not None:
            return [str(self.failure)]
        head = f"OK {self.events} events, head {self.head or 'none'}"
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
        else:
            yield number, _BAD, obj, f"unknown line type {kind!r}"


def _peek_events(lines: Iterator[tuple[int, str, Any, str]], count: int) -> list[dict[str, Any]]:
    """Up to `count` next event lines, skipping checkpoints, stopping at a bad line.
    Only used once a failure is certain, to tell its kind: nothing is put back."""
    found: list[dict[str, Any]] = []
    for _number, kind, obj, _problem in lines:
        if kind == _CHECKPOINT:
            continue
        if kind != _EVENT:
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
            if kind == _BAD:
                seq = expected
                if seq is None and isinstance(obj, dict) and type(obj.get("seq")) is int:
                    seq = obj["seq"]
                return Failure(seq, MALFORMED, problem, number)

            seq, link, own = obj["seq"], obj["prev_hash"], obj["hash"]
            if event_hash(obj) != own:
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
                                             for _head, label in known if label != EARLIER)
        return None


def verify_stream(open_stream: Callable[[], BinaryIO], *, pubkey: bytes | None = None,
                  checkpoint: dict[str, Any] | None = None, from_start: bool = False) -> Result:
    """Verify the export that `open_stream()` opens (called twice: two passes).

    `pubkey`: raw 32-byte Ed25519 key every checkpoint must be signed with.
    `checkpoint`: a checkpoint from an earlier export this one must extend.
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
    walk = _Walk(claims, bad_checkpoints, result, from_start, checkpoint)
    with open_stream() as stream:
        result.failure = walk.run(stream)
    return result


def verify_file(path: str, **options: Any) -> Result:
    try:
        return verify_stream(lambda: open(path, "rb", buffering=1 << 20), **options)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


def verify_bytes(data: bytes, **options: Any) -> Result:
    return verify_stream(lambda: io.BytesIO(data), **options)


# ---------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="changegate-audit", description="Offline tools for changegate's audit log exports.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify", help="recompute the hash chain of a JSON Lines export and check its checkpoints",
        description="Recompute the hash chain of a JSON Lines audit export and check its signed checkpoints. "
                    "Prints 'OK N events, head <hash>' and exits 0, or the first bad sequence number and why "
                    "(edited, missing, reordered, inserted, truncated, malformed, signature) and exits 1. "
                    "Exit 2: usage error or unreadable file.")
    verify.add_argument("file", metavar="FILE", help="the JSON Lines export")
    verify.add_argument("--pubkey", metavar="KEY",
                        help="changegate's checkpoint public key (PEM, ssh-ed25519, or base64 of the raw 32 bytes); "
                             "every checkpoint must be signed with it")
    verify.add_argument("--checkpoint", metavar="OLD",
                        help="a checkpoint line kept from an earlier export (or that export): this export must "
                             "contain its event with its hash")
    verify.add_argument("--from-start", action="store_true",
                        help="the export must begin the chain (seq 1, prev_hash of 64 zeros)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pubkey = load_public_key(args.pubkey) if args.pubkey else None
        earlier = load_checkpoint_file(args.checkpoint) if args.checkpoint else None
        result = verify_file(args.file, pubkey=pubkey, checkpoint=earlier, from_start=args.from_start)
    except UsageError as exc:
        print(f"changegate-audit: {exc}", file=sys.stderr)
        return 2
    for line in result.report():
        print(line)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

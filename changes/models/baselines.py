"""The baseline out-of-band change detection (drift.sweep) compares a fresh
whole-target read (DNS: the zone) with. Separate because its size grows with the
zone: it is one header row per target and one row per key, so a plan changegate
applies rewrites only the keys it touches (issue 14, finding 1).
"""

from __future__ import annotations

from typing import Any

from django.db import models

from changes.models.targets import Target


class Baseline(models.Model):
    """What a target holds as far as changegate knows (DNS: its zone; was
    ZoneBaseline before target kinds): the last whole-target read, moved forward
    by every plan changegate itself applies or rolls back (drift.sweep). A
    difference between a fresh read and this is an out-of-band change.

    This row is the header; the values are `BaselineEntry` rows, one per key.
    Until migration 0016 they were one JSON value per zone (~6 MB for a
    100,000-RRset zone), decoded, re-hashed and rewritten whole by every apply.
    """

    target = models.OneToOneField(Target, on_delete=models.CASCADE, related_name="baseline")
    taken_at = models.DateTimeField()  # last whole-zone read that confirmed or refreshed it
    version = models.PositiveBigIntegerField()  # the target's version at that read (DNS: SOA serial)
    item_count = models.PositiveIntegerField()  # keys held (DNS: RRsets)
    # The sum modulo 2**256 of the entries' digests (drift.sweep.records_digest):
    # order-independent, so an apply moves it by the touched keys alone, and anyone
    # can recompute it from the entries (and from the audit event that quotes it).
    digest = models.CharField(max_length=64)
    # One digest of the whole last read's wire (drift.sweep._wire_read; blank
    # after a plan moved the baseline): an equal fresh read is unchanged without
    # parsing a single rdata.
    wire_digest = models.CharField(max_length=64, blank=True)
    # Bumped by every write: a check that read the zone while an apply moved the
    # baseline compares against the wrong state and must give up.
    revision = models.PositiveIntegerField(default=1)

    def __str__(self) -> str:
        return f"baseline of {self.target_id} (version {self.version})"

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """All entries as one map "owner type" -> {"ttl", "rdatas"}: a whole-target
        read, for tests and inspection; the services never build it."""
        return dict(self.entries.values_list("key", "value"))


class BaselineEntry(models.Model):
    """One key of a baseline (DNS: an RRset). `value` is {"ttl", "rdatas"}, the
    presentation form of a plan's steps (RRValue.to_json()), so a step's `after`
    is written in as is and the diff shows before and after values; a firewall
    chain's rules keep their order. `digest` is SHA-256 over its "owner ttl type
    rdata" lines in that order (drift.sweep.entry_digest)."""

    baseline = models.ForeignKey(Baseline, on_delete=models.CASCADE, related_name="entries")
    key = models.TextField()  # RRKey's str: "owner type"
    value = models.JSONField()
    digest = models.CharField(max_length=64)
    # SHA-256 over its TTL and canonical rdata wire as last read (blank after a plan
    # wrote the value): an equal fresh read needs no rdata parsed for this key.
    wire = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["baseline", "key"], name="baseline_entry_unique_key")]

    def __str__(self) -> str:
        return self.key

"""The baseline out-of-band change detection (drift.sweep) compares a fresh
whole-target read (DNS: the zone) with. Separate because its size grows with the zone, and
its storage trade-off (one JSON value per zone) is documented and revisited here.
"""

from __future__ import annotations

from django.db import models

from changes.models.targets import Target


class Baseline(models.Model):
    """What a target holds as far as changegate knows (DNS: its zone; was
    ZoneBaseline before target kinds): the last whole-target read, moved forward by every plan changegate itself applies or rolls back
    (drift.sweep). A difference between a fresh read and this is an out-of-band
    change.

    `records` maps "owner type" (as RRKey's str) -> {"ttl", "rdatas"}, the same
    presentation form as a plan's steps, so a step's `after` is written in as is
    and the diff shows before and after values. It is one JSON value per zone:
    about 60 bytes per RRset, so 10,000 RRsets are ~0.6 MB and a 100,000-RRset
    zone ~6 MB, rewritten whenever the zone changed. Beyond that, move to one row
    per RRset (key, ttl, rdatas, digest) and rewrite only the keys that changed.
    """

    target = models.OneToOneField(Target, on_delete=models.CASCADE, related_name="baseline")
    taken_at = models.DateTimeField()  # last whole-zone read that confirmed or refreshed it
    version = models.PositiveBigIntegerField()  # the target's version at that read (DNS: SOA serial)
    item_count = models.PositiveIntegerField()  # keys held (DNS: RRsets)
    # SHA-256 over the sorted "owner ttl type rdata" lines of `records`: anyone can
    # recompute it from the stored records (and from the audit event that quotes it).
    digest = models.CharField(max_length=64)
    # SHA-256 over the canonical rdata wire of the zone as last read (blank after a
    # plan moved the baseline): an equal fresh read is unchanged without parsing
    # a single rdata.
    wire_digest = models.CharField(max_length=64, blank=True)
    # Bumped by every write: a check that read the zone while an apply moved the
    # baseline compares against the wrong state and must give up.
    revision = models.PositiveIntegerField(default=1)
    records = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"baseline of {self.target_id} (version {self.version})"

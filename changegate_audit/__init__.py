"""Offline tools for changegate's audit log.

`changegate_audit.verify` checks a JSON Lines export of the hash-chained audit
log (`changegate-audit verify FILE`). This package needs only the standard
library and `cryptography`: it imports no Django and no server code, so an
auditor can run it on a machine that has neither (see docs/audit.md).
"""

__all__ = ["verify"]

"""Generic code never imports a concrete kind: outside the adapter package, the
tests and the benchmarks, exactly one module (the registration, changes/kinds.py)
names dns_adapters, firewall_adapters or dnspython (../shared/DESIGN.md "Layout"; issue 11)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# dns_adapters is the DNS kind itself; tests and bench drive real named; scripts/
# holds dev tooling (devrun starts a throwaway named, like tests/processes.py).
EXEMPT = {"dns_adapters", "firewall_adapters", "tests", "bench", "scripts"}
CONCRETE = re.compile(r"dns_adapters|firewall_adapters|^\s*import dns\b|^\s*from dns\b", re.MULTILINE)


def test_only_the_registration_imports_a_concrete_kind() -> None:
    found = sorted(
        str(path.relative_to(ROOT))
        for top in ROOT.iterdir() if top.is_dir() and top.name not in EXEMPT and not top.name.startswith(".")
        for path in top.rglob("*.py")
        if CONCRETE.search(path.read_text(encoding="utf-8"))
    )
    assert found == ["changes/kinds.py"]

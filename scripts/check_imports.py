"""Import every production module on its own, each in a fresh interpreter (after
django.setup() for the Django packages), and report those that fail: an import
that only works after some other module happened to be imported first is a hidden
circle or a missing dependency. `make check-imports`; ~1 minute."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every top-level package of the project but tests and benchmarks; those with an
# AppConfig (or the settings package) need django.setup() first, the others must not.
PACKAGES = sorted(path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name not in {"tests", "bench"})
DJANGO = tuple(name for name in PACKAGES if (ROOT / name / "apps.py").exists() or name == "config")
PLAIN = tuple(name for name in PACKAGES if name not in DJANGO)
# Programs copied to a firewall host and run there from one directory, standard library
# only (python3 -I -S): imported the same way, which also proves they need nothing else.
HOST_PROGRAMS = {"firewall_adapters.host_helper", "firewall_adapters.host_tables"}


def modules() -> list[str]:
    found = []
    for package in (*PLAIN, *DJANGO):
        for path in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []:
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if "migrations" in parts or parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts.pop()
            found.append(".".join(parts))
    return found


def check(module: str) -> tuple[str, str | None]:
    if module in HOST_PROGRAMS:
        package, name = module.split(".")
        code = f"import sys; sys.path.insert(0, {str(ROOT / package)!r}); import {name}"
        done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
        return module, None if done.returncode == 0 else done.stderr.strip().splitlines()[-1]
    code = f"import importlib; importlib.import_module({module!r})"
    if module.split(".")[0] in DJANGO or module.startswith("changegate_cli.django"):
        code = f"import django; django.setup(); {code}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.test")}
    if module == "config.settings.production":
        # Production settings refuse to load without a secret key and PostgreSQL (by design).
        env.update(DJANGO_SECRET_KEY="check-imports-" + "k" * 50, DATABASE_URL="postgres://check@127.0.0.1/check")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    return module, None if done.returncode == 0 else done.stderr.strip().splitlines()[-1]


def main() -> int:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(check, modules()))
    failed = [(module, error) for module, error in results if error]
    for module, error in failed:
        print(f"FAIL {module}: {error}")
    print(f"{len(results) - len(failed)} of {len(results)} modules import on their own")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

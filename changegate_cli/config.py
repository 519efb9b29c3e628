"""Where the server URL, token and username come from: flags, environment, config file."""

from __future__ import annotations

import argparse
import configparser
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError


@dataclass(frozen=True)
class Settings:
    url: str
    token: str
    user: str | None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "changegate" / "config.ini"


def resolve_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Flags beat environment, environment beats the config file profile."""
    path = config_path()
    profile_name = args.profile or env.get("CHANGEGATE_PROFILE") or "default"
    explicit_profile = bool(args.profile or env.get("CHANGEGATE_PROFILE"))
    profile: dict[str, str] = {}
    if path.exists():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        if parser.has_section(profile_name):
            profile = dict(parser.items(profile_name))
            if "token" in profile and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                _warn(f"{path} holds a token and is readable by others; run: chmod 600 {path}")
        elif explicit_profile:
            raise UsageError(f"no [{profile_name}] section in {path}")
    elif explicit_profile:
        raise UsageError(f"profile {profile_name!r} given but {path} does not exist")

    url = args.url or env.get("CHANGEGATE_URL") or profile.get("url") or ""
    token = args.token or env.get("CHANGEGATE_TOKEN") or profile.get("token") or ""
    user = args.user or env.get("CHANGEGATE_USER") or profile.get("user") or None
    where = f"--{{}}, CHANGEGATE_{{}} or {{}}= in [{profile_name}] of {path}"
    if not url:
        raise UsageError("no server URL: set " + where.format("url", "URL", "url"))
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"server URL must start with http:// or https://, got {url!r}")
    if not token:
        raise UsageError("no API token: set " + where.format("token", "TOKEN", "token"))
    return Settings(url=url.rstrip("/"), token=token.strip(), user=user)


def _warn(message: str) -> None:
    print(f"changegate: warning: {message}", file=sys.stderr)

"""The one way an adapter opens a secret file it was given by path.

A target's config names its key file, and whoever registers a target chooses that
path: without a fence, registration would read any file the gateway can (an error
about `/etc/passwd` tells the caller it exists and what it looks like; `/dev/zero`
never ends; a FIFO blocks the worker forever). So a key file must be a regular
file of bounded size inside one configured directory, and every failure is one of
a few fixed messages that never quote the file and never say whether a path
outside the directory exists.
"""

from __future__ import annotations

import errno
import os
import re
import stat

import dns.tsig

from .base import ConfigError

MAX_KEY_FILE_BYTES = 64 * 1024  # a BIND key block is a few hundred bytes

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: even if a FIFO is swapped in between the check and the open, the open
# does not wait for a writer. O_NOCTTY: a terminal never becomes ours.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def outside_message(key_dir: str | os.PathLike[str]) -> str:
    return f"tsig_key_file must be a file inside the key directory {os.fspath(key_dir)}"


def read_key_file(path: str, *, key_dir: str | os.PathLike[str]) -> bytes:
    """The bytes of the file at absolute `path`, which must resolve (symlinks
    followed) to a regular file inside `key_dir` of at most MAX_KEY_FILE_BYTES.

    Raises ConfigError with one of: outside the key directory (for every path
    outside it, existing or not), not found, not a regular file, too large, cannot
    be read. Messages name the path as given, never the content.
    """
    outside = ConfigError(outside_message(key_dir))
    try:
        base = os.path.realpath(key_dir)
        if not isinstance(path, str) or not os.path.isabs(path):
            raise outside
        resolved = os.path.realpath(path)
    except (ValueError, OSError, TypeError):  # a NUL byte, a symlink loop
        raise outside from None
    # realpath resolves every symlink and "..", so this is a check on where the
    # file really is, not on how its name is spelled.
    if resolved == base or os.path.commonpath([base, resolved]) != base:
        raise outside
    parts = os.path.relpath(resolved, base).split(os.sep)

    def failure(message: str) -> ConfigError:
        return ConfigError(f"TSIG key file {path}: {message}")

    fds: list[int] = []
    try:
        # Walk down from the key directory one component at a time, refusing
        # symlinks: a symlink swapped in after realpath() (a race) cannot lead out.
        fds.append(os.open(base, _DIR_FLAGS))
        for part in parts[:-1]:
            fds.append(os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fds[-1]))
        # lstat before open: opening a device node can have side effects (a tape
        # rewinds), and opening a FIFO for reading waits for a writer.
        if not stat.S_ISREG(os.stat(parts[-1], dir_fd=fds[-1], follow_symlinks=False).st_mode):
            raise failure("not a regular file")
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fds[-1])
        fds.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between the lstat and the open
            raise failure("not a regular file")
        too_large = failure(f"too large (a key file is at most {MAX_KEY_FILE_BYTES // 1024} KiB)")
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise too_large
        data = bytearray()
        while len(data) <= MAX_KEY_FILE_BYTES:  # the file may grow while we read: bound the read itself
            chunk = os.read(fd, MAX_KEY_FILE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_KEY_FILE_BYTES:
            raise too_large
        return bytes(data)
    except (FileNotFoundError, NotADirectoryError):
        raise failure("not found") from None
    except PermissionError:
        raise failure("cannot be read (permission denied)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink appeared on the way down after realpath()
            raise outside from None
        raise failure("cannot be read") from None
    finally:
        for fd in reversed(fds):
            os.close(fd)


# BIND-format key files (moved here from rfc2136.py)

TSIG_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}
_KEY_RE = re.compile(
    r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>.*?)\}\s*;', re.DOTALL
)
_ALGO_RE = re.compile(r'algorithm\s+"?(?P<algo>[A-Za-z0-9.-]+)"?\s*;')
_SECRET_RE = re.compile(r'secret\s+"(?P<secret>[A-Za-z0-9+/=\s]+)"\s*;')


def load_tsig_key(path: str, *, key_dir: str | os.PathLike[str]) -> dns.tsig.Key:
    """Read a BIND-format key file from inside `key_dir` (see `key_files`). Error
    messages are fixed texts naming the path: never the secret, nor any other part
    of the file (the path might have been somebody else's file)."""
    data = read_key_file(path, key_dir=key_dir)
    not_a_key = ConfigError(f"TSIG key file {path}: not a BIND key file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise not_a_key from None
    match = _KEY_RE.search(text)
    if not match:
        raise not_a_key
    body = match.group("body")
    algo_match = _ALGO_RE.search(body)
    secret_match = _SECRET_RE.search(body)
    algorithm = algo_match.group("algo").lower() if algo_match else "hmac-sha256"
    if algorithm not in TSIG_ALGORITHMS:
        raise ConfigError(f"TSIG key file {path}: not a BIND key file (unsupported algorithm)")
    if not secret_match:
        raise ConfigError(f"TSIG key file {path}: not a BIND key file (no secret)")
    try:
        return dns.tsig.Key(
            match.group("name"), "".join(secret_match.group("secret").split()), TSIG_ALGORITHMS[algorithm]
        )
    except Exception:  # binascii.Error and friends: do not echo any part of the secret
        raise ConfigError(f"TSIG key file {path}: not a BIND key file (the secret is not valid base64)") from None

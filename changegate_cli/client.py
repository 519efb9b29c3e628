"""The REST API over HTTP: one `Client`, which maps every failure to an error of
`changegate_cli.errors` (HTTP error -> ApiError, no answer -> CannotConnect)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from .errors import ApiError, CannotConnect, UsageError

VERSION = "0.1"
USER_AGENT = f"changegate-cli/{VERSION}"  # the server records origin "cli" from this prefix
# Connect fast, read slowly: a propose or plan waits for a dry run against the live zone.
TIMEOUT = (10, 120)


class Client:
    """The REST API over HTTP. Every method returns decoded JSON or raises
    ApiError (HTTP error) or CannotConnect (no answer)."""

    def __init__(self, base_url: str, token: str, *, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update({
            "Authorization": f"Token {token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        })

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None) -> Any:
        url = self.url(path)
        try:
            response = self.session.request(method, url, params=params, json=body, timeout=TIMEOUT)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as exc:
            raise UsageError(f"bad server URL {self.base_url!r}: {exc}") from None
        except requests.RequestException as exc:  # refused, DNS, TLS, timeout, too many redirects
            raise CannotConnect(self.base_url, _connect_reason(exc)) from None
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        if response.status_code >= 400:
            # Without a JSON body (an HTML error page) the URL is the useful hint:
            # usually a wrong base URL or a proxy in the way.
            reason = (response.reason or "") if data is not None else f"{response.reason} ({method} {url})"
            raise ApiError(response.status_code, data, reason)
        if data is None and response.content:
            raise ApiError(response.status_code, None, f"{response.reason}: the answer is not JSON ({url})")
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body if body is not None else {})

    def paginate(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every result of a paginated list, following `next`."""
        page = self.get(path, **params)
        while True:
            if isinstance(page, list):  # an unpaginated list
                yield from page
                return
            yield from page.get("results", [])
            if not page.get("next"):
                return
            page = self.request("GET", self._same_origin(page["next"]))

    def _same_origin(self, link: str) -> str:
        """`next` links are absolute and built from the Host the server saw; behind a
        TLS-terminating proxy they may say http://, and a link to another host
        would carry our token there. Keep our scheme and host, take its path."""
        base, target = urlsplit(self.base_url), urlsplit(link)
        return urlunsplit((base.scheme, base.netloc, target.path, target.query, ""))

    def all_pages(self, path: str, **params: Any) -> dict[str, Any]:
        """The list as one page: the server's shape, with every page's results."""
        results = list(self.paginate(path, **params))
        return {"count": len(results), "next": None, "previous": None, "results": results}


def _connect_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    # urllib3 nests the useful part ("Connection refused", "Name or service not known").
    text = str(exc.args[0] if exc.args else exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "Temporary failure in name resolution", "Network is unreachable"):
        if marker in text:
            return marker.lower()
    return text

"""`dns_server`: each test that takes it runs against BIND 9, Knot DNS and PowerDNS
(tests/dns_servers.py)."""

from tests.dns_servers import dns_server  # noqa: F401 - a fixture

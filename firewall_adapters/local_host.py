"""What a throwaway nftables host is made of, shared by the tests
(tests/firewall_adapters/firewall_host.py) and the demo (scripts/firewall_demo.py):
the owned table changegate manages there, and a tiny TCP service that answers "ok"
on each port it is given, so a block rule shows as a failed health check."""

OWNED_TABLE = "inet changegate"
RULESET = """table inet changegate {
    set partners_v4 { type ipv4_addr; flags interval; elements = { 192.0.2.10, 198.51.100.0/24 } }
    chain input {
        type filter hook input priority filter; policy accept;
        ct state established,related accept
        tcp dport 22 accept
        ip saddr @partners_v4 tcp dport 8443 accept
    }
}
"""
# python3 -c SERVICE ADDRESS PORT...: prints "ready" once listening on every port.
SERVICE = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[2:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(64); s.setblocking(False); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept(); conn.sendall(b"ok\\n"); conn.close()
"""

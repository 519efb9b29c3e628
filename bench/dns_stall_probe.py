"""Are pipelined reads still meeting delayed ACKs? Evidence at the TCP level (issue 14, finding 3).

    sudo .venv/bin/python -m bench.dns_stall_probe [--plans 500]      # needs root (AF_PACKET on lo)

Wall time cannot tell a 40 ms delayed-ACK stall from CPU contention on a loaded 2-core
machine (bench.dns_bench's "over 30 ms" count and p99 include both). This captures the
segments on the loopback interface while a throwaway BIND serves three interleaved
variants, each on its own connection: the adapter's pipelined plan as shipped
(TCP_QUICKACK re-armed after every read, dns_adapters/connection.py), the same with
TCP_QUICKACK off, and ten bare sequential queries. A stall is a server data segment
sent over 30 ms after the previous one within one exchange; "released by our ACK"
means the client's pure ACK came under 2 ms before it, i.e. named (Nagle) held the
segment until our delayed ACK. Kernel timestamps, so the figures do not depend on load.

A probe, not a test: it prints counts and asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import stats
from bench.dns_bench import ZONE, Targeted, zone_records

SO_TIMESTAMPNS = 35  # Linux; socket module does not export it
STALL = 0.030


def sniff(port: int, out_path: str) -> None:
    """Child: write `ts, src, dst, payload length` of every TCP segment to/from `port` on lo until SIGTERM."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.ntohs(0x0800))
    sock.bind(("lo", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(0.2)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with open(out_path, "w") as out:
        print("ready", flush=True)
        while not stop:
            try:
                data, ancillary, _, address = sock.recvmsg(65535, 1024)
            except (TimeoutError, InterruptedError):
                continue
            if address[2] == socket.PACKET_OUTGOING or len(data) < 20 or data[9] != 6:
                continue  # on lo every segment is seen twice; keep the incoming copy
            ihl = (data[0] & 15) * 4
            total = struct.unpack("!H", data[2:4])[0]
            src, dst = struct.unpack("!HH", data[ihl : ihl + 4])
            if port not in (src, dst):
                continue
            payload = total - ihl - (data[ihl + 12] >> 4) * 4
            ts = next((sum(x / d for x, d in zip(struct.unpack("qq", c[:16]), (1, 1e9), strict=True))
                       for _, kind, c in ancillary if kind == SO_TIMESTAMPNS), 0.0)
            out.write(f"{ts:.6f}\t{src}\t{dst}\t{payload}\n")


def stalls(rows: list[tuple[float, bool, int]]) -> tuple[int, int, int, list[float]]:
    """(client writes, stalls, stalls released by a client ACK, stall gaps in ms) of one connection."""
    writes = count = released = 0
    gaps: list[float] = []
    last_data = last_ack = None
    for ts, from_server, payload in sorted(rows):
        if not from_server:
            if payload:
                writes, last_data = writes + 1, ts
            else:
                last_ack = ts
            continue
        if payload and last_data is not None:
            if ts - last_data > STALL:
                count += 1
                gaps.append(round((ts - last_data) * 1000, 1))
                released += last_ack is not None and 0 <= ts - last_ack < 0.002
            last_data = ts
    return writes, count, released, gaps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=int, default=500, help="interleaved rounds")
    parser.add_argument("--sniff", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sniff:
        sniff(int(args.sniff[0]), args.sniff[1])
        return

    import dns.tsigkeyring

    from dns_adapters import connection
    from dns_adapters.local_named import LocalNamed, default_zone_text
    from dns_adapters.rfc2136 import RFC2136Adapter

    named = LocalNamed({ZONE: default_zone_text(ZONE, zone_records(1000))}, start_timeout=120)
    named.start()
    capture = Path(tempfile.mkdtemp(prefix="dns-stall-")) / "segments.tsv"
    sniffer = subprocess.Popen([sys.executable, "-m", "bench.dns_stall_probe", "--sniff", str(named.port),
                                str(capture)], stdout=subprocess.PIPE, text=True)
    quickack = connection._QUICKACK
    try:
        if sniffer.stdout is None or sniffer.stdout.readline().strip() != "ready":
            raise SystemExit("capture did not start (AF_PACKET needs root)")
        keyring = dns.tsigkeyring.from_file(str(named.key_file))
        keyname = next(iter(keyring))

        def adapter() -> RFC2136Adapter:
            return RFC2136Adapter({"zone": ZONE, "primary": named.primary, "tsig_key_file": str(named.key_file),
                                   "timeout": 5}, key_dir=named.dir)

        shipped, without = Targeted(adapter(), named.port, keyring, keyname), Targeted(adapter(), named.port,
                                                                                    keyring, keyname)

        def plan_without_quickack() -> None:
            connection._QUICKACK = None
            try:
                without.ours()
            finally:
                connection._QUICKACK = quickack

        variants = {"plan (shipped)": shipped.ours, "plan, QUICKACK off": plan_without_quickack,
                    "10 bare queries": shipped.bare}
        ports = {"plan (shipped)": shipped.adapter._conn.sock.getsockname()[1],
                 "plan, QUICKACK off": without.adapter._conn.sock.getsockname()[1],
                 "10 bare queries": shipped.sock.getsockname()[1]}
        samples = stats.interleaved(variants, args.plans)
    finally:
        connection._QUICKACK = quickack
        sniffer.terminate()
        sniffer.wait()
        named.stop()
    flows: dict[int, list[tuple[float, bool, int]]] = collections.defaultdict(list)
    for row in capture.read_text().splitlines():
        ts, src, dst, payload = row.split("\t")
        from_server = int(src) == named.port
        flows[int(dst) if from_server else int(src)].append((float(ts), from_server, int(payload)))
    print(f"{args.plans} interleaved rounds, named {named.primary}; stall = server segment > {STALL * 1000:.0f} ms "
          "after the previous one within an exchange")
    for name, port in ports.items():
        fig = stats.summary(samples[name])
        writes, count, released, gaps = stalls(flows[port])
        print(f"  {name:<20} median {stats.ms(fig['median'])}, p99 {stats.ms(fig['p99'])} | TCP: {writes} writes, "
              f"stalls {count}, released by our ACK {released}  {gaps[:12]}")


if __name__ == "__main__":
    main()

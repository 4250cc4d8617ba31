"""Test-only network guard: an audit hook that logs every outgoing connect() and refuses any to an
address outside 127.0.0.0/8 and ::1, so that a regression in the SSRF guard can never send a packet
off this machine. While armed it also refuses socket.getaddrinfo for any host but "localhost" and
loopback IP literals, so no test can send a DNS query (a refused lookup raises socket.gaierror,
as a failed one would). Serve replicas in the tests load it as `sitecustomize`
(PYTHONPATH=tests/netguard in their runtime_env, with MMSENT_NETGUARD_LOG naming the log); the test
process calls install().

A log line is `host port`. No line for an address means no connection was even attempted to it.
"""

import ipaddress
import os
import socket
import sys


def is_loopback(host: str) -> bool:
    try:
        addrs = [ipaddress.ip_address(host.split("%")[0])]
    except ValueError:  # a name: judge every address it resolves to
        try:
            infos = socket.getaddrinfo(host, 0)
            addrs = [ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos]
        except OSError:
            return False
    mapped = [getattr(a, "ipv4_mapped", None) or a for a in addrs]
    return bool(mapped) and all(a.is_loopback for a in mapped)


def is_loopback_literal(host) -> bool:
    """A host getaddrinfo answers without DNS and that is loopback: "localhost", an IPv6
    literal, or any IPv4 spelling inet_aton reads (127.1, 0x7f.1, 2130706433). No lookup here."""
    if host is None:  # getaddrinfo(None, ...): the local wildcard/loopback address
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host)
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        try:
            addr = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):  # a name: it would need DNS
            return False
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


def install(log_path: str, armed=lambda: True) -> None:
    def hook(event, args):
        if event not in ("socket.connect", "socket.getaddrinfo") or not armed():
            return
        if event == "socket.getaddrinfo":
            if not is_loopback_literal(args[0]):
                raise socket.gaierror(socket.EAI_NONAME, f"netguard: no DNS for {args[0]!r}")
            return
        address = args[1]
        if not isinstance(address, tuple):  # AF_UNIX
            return
        host, port = str(address[0]), address[1]
        with open(log_path, "a") as f:
            f.write(f"{host} {port}\n")
        # a name is resolved by is_loopback's getaddrinfo, which this hook judges in turn: only
        # "localhost" passes, so no name ever reaches DNS from here either
        if not is_loopback(host):
            raise ConnectionRefusedError(f"netguard: no traffic to {host} from tests")

    sys.addaudithook(hook)


if os.environ.get("MMSENT_NETGUARD_LOG"):
    install(os.environ["MMSENT_NETGUARD_LOG"])

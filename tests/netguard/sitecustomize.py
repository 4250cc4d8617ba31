"""Test-only network guard: an audit hook that logs every outgoing connect() and refuses any to an
address outside 127.0.0.0/8 and ::1, so that a regression in the SSRF guard can never send a packet
off this machine. Serve replicas in the tests load it as `sitecustomize` (PYTHONPATH=tests/netguard
in their runtime_env, with MMSENT_NETGUARD_LOG naming the log); the test process calls install().

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


def install(log_path: str, armed=lambda: True) -> None:
    def hook(event, args):
        if event != "socket.connect" or not armed():
            return
        address = args[1]
        if not isinstance(address, tuple):  # AF_UNIX
            return
        host, port = str(address[0]), address[1]
        with open(log_path, "a") as f:
            f.write(f"{host} {port}\n")
        if not is_loopback(host):
            raise ConnectionRefusedError(f"netguard: no traffic to {host} from tests")

    sys.addaudithook(hook)


if os.environ.get("MMSENT_NETGUARD_LOG"):
    install(os.environ["MMSENT_NETGUARD_LOG"])

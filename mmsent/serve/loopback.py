"""Keep a local Serve on loopback. Ray Serve 2.60 starts an inter-deployment gRPC server in every
replica on `[::]:0`: all interfaces, whatever address the Ray node has. Each mmsent deployment calls
`keep_replica_grpc_on_loopback()` in its constructor, before Serve starts that server: on a node
whose Ray address is 127.0.0.1 (local mode, tests: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) the server
binds 127.0.0.1 instead. On a cluster node (a pod IP) it stays as Ray made it: other nodes call it.
tests/test_serve.py checks that no Ray process listens off loopback.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("ray.serve")


def keep_replica_grpc_on_loopback() -> None:
    import ray
    from ray.serve._private import replica

    add_port = getattr(replica, "add_port_to_grpc_server", None)
    if ray.util.get_node_ip_address() != "127.0.0.1" or getattr(add_port, "loopback", False):
        return
    if add_port is None:  # another Ray version: the listener test will tell
        logger.warning("cannot keep the replica's gRPC server on 127.0.0.1 with this Ray version")
        return

    def on_loopback(server, address: str) -> int:
        return add_port(server, address.replace("[::]:", "127.0.0.1:", 1))

    on_loopback.loopback = True
    replica.add_port_to_grpc_server = on_loopback

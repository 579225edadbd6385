"""The embedded Ray (``framefleet serve`` without ``--address``: a one-machine cluster)
listens on loopback only: no Ray process of the gateway's session takes a port on
another interface."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

import psutil

from cluster import Fleet
from cluster.ray_edge.runtime import Runtime
from tests.helpers import wait_until

# Processes every embedded Ray has that listen once they are up (the autoscaler's
# metrics need prometheus_client, which the gateway's /metrics needs too).
ALWAYS_LISTEN = ("gcs_server", "raylet", "ray::RuntimeEnvAgent", "monitor.py")


@dataclass(frozen=True)
class Listener:
    process: str
    pid: int
    kind: str
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.process} (pid {self.pid}) {self.kind} {self.ip}:{self.port}"


def _name(proc: psutil.Process) -> str:
    """``raylet``, ``ray::IDLE``, ``monitor.py`` (a Python script by its file's name)."""
    if proc.pid == os.getpid():
        return "the driver (this process)"
    try:
        argv = [a.rsplit("/", 1)[-1] for a in proc.cmdline() if a]
    except psutil.Error:
        return proc.name()
    if not argv:
        return proc.name()
    scripts = [a for a in argv[1:] if a.endswith(".py")]
    return scripts[0] if argv[0].startswith("python") and scripts else argv[0]


def _session_processes(runtime: Runtime) -> list[psutil.Process]:
    """This process (the driver) and every process of its Ray session: those started
    with the session's temp dir on their command line (GCS, raylet, monitor, dashboard,
    log monitor) and what they started (workers, agents)."""
    assert runtime.temp_dir is not None, "the session Ray is not the embedded one"
    me = psutil.Process()
    found = {me.pid: me}
    for child in me.children(recursive=True):
        try:
            if str(runtime.temp_dir) in " ".join(child.cmdline()):
                found[child.pid] = child
                found.update((p.pid, p) for p in child.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def _listeners(procs: list[psutil.Process]) -> list[Listener]:
    """Listening TCP sockets and unconnected (receiving from anyone) UDP sockets."""
    found = []
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
            name = _name(proc)
        except psutil.NoSuchProcess:
            continue
        for c in conns:
            if c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN:
                kind = "tcp"
            elif c.type == socket.SOCK_DGRAM and not c.raddr:
                kind = "udp"
            else:
                continue
            found.append(Listener(name, proc.pid, kind, c.laddr.ip, c.laddr.port))
    return found


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def test_the_embedded_ray_listens_on_loopback_only(ray_runtime: Runtime, fleet: Fleet) -> None:
    wait_until(fleet.nodes)  # the coordinator and the node's agent actors run
    names = {_name(p) for p in _session_processes(ray_runtime)}
    assert set(ALWAYS_LISTEN) <= names, f"the session's processes not all found: {names}"

    def all_up() -> list[Listener] | None:
        listeners = _listeners(_session_processes(ray_runtime))
        return listeners if set(ALWAYS_LISTEN) <= {x.process for x in listeners} else None

    try:
        listeners = wait_until(all_up)
    except AssertionError:
        up = {x.process for x in _listeners(_session_processes(ray_runtime))}
        missing = sorted(set(ALWAYS_LISTEN) - up)
        raise AssertionError(f"still not listening: {', '.join(missing)}") from None
    exposed = [str(x) for x in listeners if not _loopback(x.ip)]
    assert not exposed, "Ray listens beyond loopback:\n" + "\n".join(exposed)

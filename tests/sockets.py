"""Which of the processes a test started listen beyond loopback (psutil, no `ss` parsing)."""

from __future__ import annotations

import psutil

from tasks.ray_runtime import is_loopback


def listeners(processes: list[psutil.Process]) -> list[tuple[int, str, str, int]]:
    """(pid, name, ip, port) of every listening TCP socket of these processes."""
    found = []
    for process in processes:
        try:
            sockets = process.net_connections(kind="inet")
            name = process.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # exited meanwhile: it listens on nothing
        found += [(process.pid, name, s.laddr.ip, s.laddr.port) for s in sockets
                  if s.status == psutil.CONN_LISTEN]
    return found


def tree(root: psutil.Process) -> list[psutil.Process]:
    """A process and all its descendants (Ray's GCS, raylet, agents and workers)."""
    return [root, *root.children(recursive=True)]


def exposed(processes: list[psutil.Process]) -> list[tuple[int, str, str, int]]:
    """The listeners of these processes that are reachable from the network."""
    return [entry for entry in listeners(processes) if not is_loopback(entry[2])]

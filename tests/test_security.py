"""Safe by default: services on loopback, a read-only `tamer sql`, safetensors-only weights."""

from __future__ import annotations

import psutil
import pytest

from sockets import exposed, listeners, tree
from tasks.ray_runtime import host_of, is_loopback


# ---- 1. every service the project starts listens on loopback ------------------------------
@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.0.2.2", False),
    ("::ffff:192.0.2.2", False), ("ray-head.internal", False),
])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


@pytest.mark.parametrize("address, host", [
    ("127.0.0.1:6379", "127.0.0.1"), ("ray://[::1]:10001", "::1"), ("::1", "::1"),
    ("ray://head:10001", "head"), ("auto", "auto"),
])
def test_host_of_a_ray_address(address, host):
    assert host_of(address) == host


def test_local_ray_listens_on_loopback_only(ray_local):
    import ray

    @ray.remote
    def ping() -> int:  # a worker process exists and serves
        return 1

    assert ray.get(ping.remote()) == 1
    assert is_loopback(ray.util.get_node_ip_address())
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    started = tree(psutil.Process())  # this test process and the Ray it started
    names = {name for _, name, _, _ in listeners(started)}
    assert any("gcs_server" in name for name in names) and any("raylet" in name for name in names)
    assert exposed(started) == []

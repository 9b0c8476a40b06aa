"""Connect to Ray: the cluster at RAY_ADDRESS when set, else a local Ray started once.

Ray has no authentication, so a local Ray must not listen on the network. Its services bind
to loopback only when the node address is a loopback address, but `ray.init` (and `ray start`)
rewrite 127.0.0.1 to the machine's network address unless Ray runs in its single-machine mode
(the one `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` selects). `RaySettings.bind_host` opts out.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Iterator

import ray
from ray._private import ray_constants

from tamer.config import RaySettings

# Ray's own switch between single-machine and cluster mode; 0 keeps 127.0.0.1 as the node address.
LOCAL_ONLY_ENV = {ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0"}


def ensure_ray(settings: RaySettings | None = None) -> None:
    """Initialize Ray once per process; a Ray already running (tests, Prefect) is reused."""
    if ray.is_initialized():
        return
    settings = settings or RaySettings()
    address = cluster_address(settings)
    common = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        # a head on loopback (`ray start --node-ip-address=127.0.0.1`) is only found as such
        mode = _single_machine_mode() if is_loopback(host_of(address)) else contextlib.nullcontext()
        with mode:
            ray.init(address=address, **common)
    else:
        _start_local(settings, common)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def cluster_address(settings: RaySettings | None = None) -> str | None:
    """The Ray cluster to join (RAY_ADDRESS, else the config's), None for a local Ray: where
    stages decide whether Ray adds workers beyond this process."""
    return os.environ.get("RAY_ADDRESS") or (settings or RaySettings()).address


def _start_local(settings: RaySettings, common: dict) -> None:
    """A local Ray whose every service listens on `settings.bind_host` (loopback by default)."""
    host = settings.bind_host
    local = is_loopback(host)
    node_ip = None if host in ("0.0.0.0", "::") else host  # any interface: Ray picks the address
    with _single_machine_mode() if local else contextlib.nullcontext():
        ray.init(num_cpus=settings.num_cpus, include_dashboard=False, dashboard_host=host,
                 _node_ip_address=node_ip, **common)
    came_up_on = ray.util.get_node_ip_address()
    if local and not is_loopback(came_up_on):  # a Ray upgrade changed the mechanism: never expose
        ray.shutdown()
        raise RuntimeError(f"local Ray came up on {came_up_on}, not loopback; ray.bind_host allows it")


@contextlib.contextmanager
def _single_machine_mode() -> Iterator[None]:
    """Ray read the mode from the environment at import; set it for this process and children."""
    saved_env = {name: os.environ.get(name) for name in LOCAL_ONLY_ENV}
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOCAL_ONLY_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.0.0.1), as listeners report them."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name: whatever it resolves to, it is meant for the network
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def host_of(address: str) -> str:
    """'127.0.0.1:6379', 'ray://[::1]:10001', 'auto' -> the host part."""
    netloc = address.split("://", 1)[-1]
    host = netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 or netloc.startswith("[") else netloc
    return host.strip("[]")

"""The lab itself: the guard route, isolation, and every sshd answering."""

from __future__ import annotations

import errno
import subprocess

import pytest

from tests.lab import Lab

pytest_plugins = ["tests.lab.fixtures"]


def test_guard_route_makes_private_hosts_unreachable(lab: Lab) -> None:
    routes = subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True).stdout
    assert lab.config.cidr in routes
    for host in [*lab.apps, lab.db]:
        with pytest.raises(OSError) as info:
            lab.connect_direct(host.name)
        assert info.value.errno == errno.EHOSTUNREACH, f"{host.name}: {info.value}"


def test_proxy_ssh_only_via_jump(lab: Lab) -> None:
    with pytest.raises(OSError) as info:
        lab.connect_direct("proxy")  # its private address
    assert info.value.errno == errno.EHOSTUNREACH
    # Its public leg answers TCP, but sshd does not listen there.
    import socket
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((lab.proxy.public_address, 22), timeout=3).close()


def test_every_host_answers_ssh_through_the_jump_with_openssh(lab: Lab) -> None:
    for host in lab.hosts.values():
        out = subprocess.run(["ssh", "-F", str(lab.ssh_config), "-o", "BatchMode=yes", host.name, "hostname; id -un"],
                             capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [host.name, lab.user]


def test_private_hosts_have_no_way_out(lab: Lab) -> None:
    out = lab.exec("app-1", "ip", "-4", "route")
    assert "default" not in out.stdout
    assert lab.exec("jump", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"

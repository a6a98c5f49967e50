"""The proxy host's systemd unit (playbooks/templates/opsconsole-proxy.service.j2) is one systemd accepts.

proxy-host.yml runs the proxy under systemd when the host runs it (/run/systemd/system), else with the
transport's service mechanism. This machine and its lab have no systemd as PID 1, so the systemd branch
cannot run here; what can be checked is the unit it writes: rendered with the playbook's own templating for
both drivers and read by the real `systemd-analyze verify`, which names any bad key or value.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opsconsole.bundled import bundled_path
from opsconsole.playbook.templating import Templar

UNIT = "opsconsole-proxy.service"


def render(host_root: Path, driver: str) -> str:
    text = bundled_path("playbooks", "templates", f"{UNIT}.j2").read_text()
    return Templar([({"inventory_hostname": "proxy-1", "host_root": str(host_root), "proxy_driver": driver,
                      "haproxy_binary": shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin") or "/usr/sbin/haproxy"},
                     False)]).render(text)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("driver", ["embedded", "haproxy"])
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path, driver: str) -> None:
    if driver == "haproxy" and not Path(render(tmp_path, driver).split("ExecStart=")[1].split()[0]).exists():
        pytest.skip("haproxy is not installed")
    venv_bin = tmp_path / "proxy" / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)  # ExecStart must name an executable that is there
    unit = tmp_path / UNIT
    unit.write_text(render(tmp_path, driver))
    text = unit.read_text()
    assert "Restart=always" in text and f"WorkingDirectory={tmp_path}" in text
    if driver == "embedded":
        assert f"ExecStart={venv_bin}/python -m opsconsole.proxy --config {tmp_path}/proxy/opsconsole.yaml" in text
    else:
        assert f"-f {tmp_path}/proxy/haproxy.cfg" in text
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if UNIT in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_does_complain_about_a_bad_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit with a bad value is named."""
    unit = tmp_path / UNIT
    unit.write_text(render(tmp_path, "embedded").replace("Restart=always", "Restart=sometimes"))
    (tmp_path / "proxy" / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "proxy" / "venv" / "bin" / "python").symlink_to(sys.executable)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert any(UNIT in line for line in (done.stdout + done.stderr).splitlines())

"""The proxy host's config, without the lab: what `provision` renders from the console's `proxy:` section
loads as the proxy's own config; `token_secret` is checked against `secrets:`; the proxy's own load of a
whole console config needs none of its playbooks (the lab tests: test_ssh_proxy_host*.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.hosts import Host
from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.traffic.proxy_host import proxy_host_vars
from opsconsole.yamlsource import SourceError
from tests.conftest import write_secret

TOKEN = "a-proxy-token-of-some-length"


def console_config(tmp: Path, *, secret: str = "proxy_token", playbook: str = "deploy.yml") -> Path:
    (tmp / "deploy.yml").write_text("- hosts: all\n  tasks: []\n")
    cfg = tmp / "console.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        project: edge
        state_dir: {tmp / 'state'}
        groups:
          web: {{provider: static, hosts: [{{name: web-1, address: 10.0.0.11, port: 8080}},
                                           {{name: web-2, address: 10.0.0.12, port: 8080}}]}}
          edge: {{provider: static, hosts: [{{name: edge-1, address: 10.0.0.2}}]}}
        apps:
          web: {{group: web, repo: https://git.invalid/web.git, deploy: {{playbook: {playbook}}}}}
        proxy:
          driver: embedded
          host: edge-1
          admin: {{listen: 127.0.0.1:0, token_secret: {secret}}}
          drain_timeout: 7s
          apps:
            web:
              listen: 0.0.0.0:8000
              pools:
                stable: {{group: web, weight: 100}}
        secrets:
          proxy_token: {{env: EDGE_PROXY_TOKEN}}
        """))
    return cfg


def test_the_rendered_config_is_the_proxys_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_PROXY_TOKEN", TOKEN)
    config = load_config(console_config(tmp_path))
    hosts = [Host(name=f"web-{i}", group="web", address=f"10.0.0.1{i}", port=8080) for i in (1, 2)]
    got = proxy_host_vars(config, hosts)
    assert got["proxy_driver"] == "embedded" and got["proxy_token"] == TOKEN
    assert TOKEN not in got["proxy_config"]
    on_host = tmp_path / "proxy-host"
    on_host.mkdir()
    (on_host / "opsconsole.yaml").write_text(got["proxy_config"])
    write_secret(on_host / "token", TOKEN)
    proxy, _ = load_proxy_config(on_host / "opsconsole.yaml")
    assert proxy.read_token() == TOKEN and proxy.host is None and proxy.drain_timeout == 7
    members = proxy.frontends["web"].pools["stable"].members
    assert [(m.name, m.address, m.port) for m in members] == [("web-1", "10.0.0.11", 8080), ("web-2", "10.0.0.12", 8080)]


def test_an_unknown_token_secret_is_named_at_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_PROXY_TOKEN", TOKEN)
    with pytest.raises(SourceError) as caught:
        load_config(console_config(tmp_path, secret="no_such"))
    assert "proxy.admin.token_secret" in str(caught.value) and "no secret named 'no_such'" in str(caught.value)
    assert "console.yaml:12:" in str(caught.value)  # the admin line


def test_the_proxy_loads_a_console_config_whose_playbooks_are_elsewhere(tmp_path: Path) -> None:
    cfg = console_config(tmp_path, playbook="playbooks/not-on-this-host.yml")
    text = cfg.read_text().replace("token_secret: proxy_token", "token_file: token")
    cfg.write_text(text.split("secrets:")[0])
    with pytest.raises(SourceError, match="does not exist"):
        load_config(cfg)  # the console still wants its playbooks
    proxy, _ = load_proxy_config(cfg)
    assert [m.name for m in proxy.frontends["web"].pools["stable"].members] == ["web-1", "web-2"]

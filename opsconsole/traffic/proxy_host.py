"""What `provision` hands the proxy host's playbook (playbooks/proxy-host.yml): the proxy's own config,
rendered from the console's `proxy:` section, so the operator writes that section once.

embedded: a proxy-only YAML document (`opsconsole proxy` reads it; see proxy/__main__.load_proxy_config)
with every `group:` pool spelled out as members — the proxy host has no inventory — and the admin token
read from the 0600 file the playbook writes next to it. The token itself goes to the playbook as
`proxy_token`, from the config's `secrets:` (a no_log task writes it).
haproxy: render_haproxy_config's haproxy.cfg, which the playbook checks with `haproxy -c`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import yaml

from opsconsole.proxy.config import GroupHost, ProxyConfig, resolve_members
from opsconsole.yamlsource import load_yaml, plain

if TYPE_CHECKING:
    from opsconsole.config.model import Config
    from opsconsole.hosts import Host

TOKEN_FILE = "token"  # next to the rendered config on the proxy host (proxy/token); the playbook writes it 0600
_CONSOLE_ONLY = ("driver", "host", "haproxy", "runtime_file")  # how the console reaches the proxy, not the proxy's


def proxy_host_name(proxy: ProxyConfig) -> str | None:
    """The inventory host the proxy runs on, or None when it runs on this machine."""
    return proxy.host if proxy.driver == "embedded" else proxy.haproxy.host


def resolved_proxy(proxy: ProxyConfig, hosts: Iterable[Host]) -> ProxyConfig:
    """`proxy` with each `group:` pool turned into the group's hosts; ValueError names a host without a port."""
    groups: dict[str, list[GroupHost]] = {}
    for h in hosts:
        groups.setdefault(h.group, []).append(GroupHost(h.name, h.address, h.port))
    return resolve_members(proxy, groups)


def render_embedded_config(config: Config, resolved: ProxyConfig) -> str:
    """The proxy host's config: the console's `proxy:` section as written, members resolved, token from a file."""
    raw = plain(load_yaml(config.file)["proxy"])
    for key in _CONSOLE_ONLY:
        raw.pop(key, None)
    admin = raw.get("admin") or {}
    raw["admin"] = {"listen": admin.get("listen", "127.0.0.1:0"), "token_file": TOKEN_FILE}
    for app, frontend in (raw.get("apps") or {}).items():
        for name, pool in (frontend.get("pools") or {}).items():
            if pool.get("group") is None:
                continue
            for key in ("group", "port", "member_weight"):
                pool.pop(key, None)
            pool["members"] = [{"name": m.name, "address": m.address, "port": m.port, "weight": m.weight}
                               for m in resolved.frontends[app].pools[name].members]
    head = (f"# Rendered by `opsconsole provision` from the proxy: section of {config.file}.\n"
            "# Edit that section and provision again; changes made here are overwritten.\n")
    return head + yaml.safe_dump({"project": config.project, "proxy": raw}, sort_keys=False)


def proxy_host_vars(config: Config, hosts: Iterable[Host]) -> dict[str, Any]:
    """The variables the proxy host's playbook gets; ValueError when the proxy section cannot be rendered."""
    from opsconsole.traffic.haproxy_config import render_haproxy_config

    proxy = config.proxy
    if proxy is None:
        raise ValueError(f"no `proxy:` section in {config.file}")
    resolved = resolved_proxy(proxy, hosts)
    if proxy.driver == "haproxy":
        return {"proxy_driver": "haproxy", "haproxy_config": render_haproxy_config(resolved)}
    return {"proxy_driver": "embedded", "proxy_config": render_embedded_config(config, resolved),
            "proxy_token": proxy.read_token(config.secrets)}



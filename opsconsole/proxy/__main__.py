"""`opsconsole proxy --config FILE` (or `python -m opsconsole.proxy --config FILE`): the embedded traffic proxy."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from opsconsole.proxy.config import GroupHost, ProxyConfig, parse_proxy_section, resolve_members


def load_proxy_config(path: Path) -> tuple[ProxyConfig, Path]:
    """The resolved proxy section of an opsconsole config, and the default runtime-file path.

    A file with a `proxy:` section and no `groups:` is a proxy's own config, as `provision` renders it
    for the proxy host (every pool's members spelled out); any other is a whole opsconsole config."""
    from opsconsole.config.loader import load_config
    from opsconsole.config.reader import MappingReader
    from opsconsole.inventory import build_inventory
    from opsconsole.yamlsource import SourceError, load_yaml

    data = load_yaml(path)
    if isinstance(data, dict) and "proxy" in data and "groups" not in data:
        top = MappingReader(data, path, "", 1)
        top.str("project")  # named for the operator reading the file; the proxy needs nothing else
        proxy = parse_proxy_section(top.mapping("proxy"), {})
        top.done()
        return proxy, path.parent / "runtime.json"
    # The proxy's host need not hold the deploy playbooks the console's copy of this config names.
    config = load_config(path, check_files=False)
    proxy = config.proxy
    if not isinstance(proxy, ProxyConfig):
        # The loader may still hand the section over raw; read it here with located errors.
        top = MappingReader(load_yaml(path), path, "", 1)
        if top.raw("proxy") is None:
            raise SourceError(str(path), None, "proxy", "no `proxy:` section in this config")
        proxy = parse_proxy_section(top.mapping("proxy"), config.groups)
    hosts: dict[str, list[GroupHost]] = {}
    if any(p.group for fe in proxy.frontends.values() for p in fe.pools.values()):
        for h in build_inventory(config).hosts:
            hosts.setdefault(h.group, []).append(GroupHost(h.name, h.address, h.port))
    return resolve_members(proxy, hosts), config.state_dir / "proxy" / "runtime.json"


def main_proxy(argv: list[str] | None = None) -> int:
    """Run the proxy until SIGTERM/SIGINT; exit 2 on a bad config or no admin token."""
    from opsconsole.yamlsource import SourceError

    p = argparse.ArgumentParser(prog="opsconsole proxy", description="The embedded traffic proxy (runs until SIGTERM; SIGHUP reloads).")
    p.add_argument("--config", "-c", metavar="FILE", required=True, help="the opsconsole YAML config with a `proxy:` section")
    p.add_argument("--runtime-file", metavar="PATH", help="write pid, admin URL and bound ports here (JSON)")
    args = p.parse_args(argv)
    path = Path(args.config)
    try:
        config, default_runtime = load_proxy_config(path)
        token = config.read_token()
    except (SourceError, ValueError) as exc:
        print(f"opsconsole proxy: {exc}", file=sys.stderr)
        return 2
    runtime_file = Path(args.runtime_file) if args.runtime_file else (config.runtime_file or default_runtime)

    def reload_config() -> ProxyConfig:
        return load_proxy_config(path)[0]

    try:
        import uvloop  # a faster event loop; the proxy works on asyncio's own without it
    except ImportError:
        uvloop = None
    from opsconsole.proxy.runtime import ProxyRuntime

    async def run() -> int:
        rt = ProxyRuntime(config, token, reload_config=reload_config, runtime_file=runtime_file)
        return await rt.run()

    try:
        if uvloop is not None:
            return uvloop.run(run())
        return asyncio.run(run())
    except OSError as exc:
        print(f"opsconsole proxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. a TLS certificate that does not load
        print(f"opsconsole proxy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main_proxy())

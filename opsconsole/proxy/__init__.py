"""The embedded traffic proxy: a separate process (`opsconsole proxy`) that keeps serving when the console dies.

Nothing in the console imports this package except the launcher and the config
loader (for `parse_proxy_section`).
"""

from opsconsole.proxy.config import ProxyConfig, parse_proxy_section

__all__ = ["ProxyConfig", "parse_proxy_section", "main_proxy"]


def main_proxy(argv: list[str] | None = None) -> int:
    from opsconsole.proxy.__main__ import main_proxy as run

    return run(argv)

"""The embedded proxy on the lab's proxy host: installed and started by playbooks/proxy-host.yml over SSH
(through the jump host), steered from this machine — outside the bastion — through an SSH-forwarded port."""

from __future__ import annotations

import asyncio
import secrets
import stat
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest

from opsconsole.playbook.loader import load_playbook
from opsconsole.traffic.remote import open_remote_embedded
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import lab_host, lab_runner, ssh_options

pytest_plugins = ["tests.lab.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
PORT, LISTEN = 8080, 8000


def proxy_config(lab: Lab) -> str:
    stable, canary = lab.apps[0], lab.apps[1]
    return textwrap.dedent(f"""\
        project: lab
        state_dir: /srv/opsconsole/proxy/state
        groups:
          web: {{provider: static, hosts: [{{name: {stable.name}, address: {stable.address}, port: {PORT}}}]}}
        apps:
          # A copy of the console's whole config: its deploy playbook is not on the proxy host, and the proxy
          # needs it not (the loader's rule that it exists is the console's, not the proxy's).
          web: {{group: web, repo: https://git.invalid/web.git, deploy: {{playbook: playbooks/web-deploy.yml}}}}
        proxy:
          admin: {{listen: 127.0.0.1:0, token_file: /srv/opsconsole/proxy/token}}
          connect_timeout: 1s
          apps:
            web:
              listen: 0.0.0.0:{LISTEN}
              health: {{path: /health, interval: 200ms, timeout: 500ms, fall: 2, rise: 2}}
              pools:
                stable: {{weight: 100, members: [{{name: {stable.name}, address: {stable.address}, port: {PORT}}}]}}
                canary: {{weight: 0, members: [{{name: {canary.name}, address: {canary.address}, port: {PORT}}}]}}
        """)


@pytest.fixture(scope="module")
def wheelhouse(lab: Lab) -> Path:
    """opsconsole's wheel and its dependencies', from this machine's package mirror: the lab hosts reach no
    index, so the playbook's pip installs from this directory (`--no-index --find-links`)."""
    out = lab.dir / "wheelhouse"
    out.mkdir(mode=0o755, exist_ok=True)
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "wheel", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True)
    return out


async def start_backend(pool: SshPool, lab: Lab, name: str) -> SshTransport:
    t = SshTransport(lab_host(lab, name, port=PORT), pool)
    await t.run(f"mkdir -p www && echo {name} > www/health")
    await t.stop_service("web")
    await t.start_service("web", f"exec python3 -m http.server {PORT} --bind 0.0.0.0 --directory www")
    return t


async def until(check, what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_embedded_proxy_installed_on_its_host_and_steered_through_the_jump(lab: Lab, wheelhouse: Path) -> None:
    (wheel,) = wheelhouse.glob("opsconsole-*.whl")
    pool = SshPool(ssh_options(lab))
    token = secrets.token_hex(16)
    url = f"http://{lab.proxy.public_address}:{LISTEN}/health"
    try:
        stable, canary = lab.apps[0].name, lab.apps[1].name
        await start_backend(pool, lab, stable)
        canary_t = await start_backend(pool, lab, canary)
        runner, events = lab_runner(pool)
        t = runner.transport_for(lab_host(lab, "proxy"))
        await t.stop_service("proxy")
        result = await runner.run(load_playbook(ROOT / "playbooks" / "proxy-host.yml"), [t.host], extra_vars={
            "proxy_driver": "embedded", "proxy_wheel": str(wheel),
            "proxy_pip_args": f"--no-index --find-links {wheelhouse}", "proxy_config": proxy_config(lab),
            "proxy_token": token})
        assert result.ok, result.failure_text()
        files = Path(lab.proxy.files)
        assert stat.S_IMODE((files / "proxy" / "token").stat().st_mode) == 0o600
        assert (files / "proxy" / "token").read_text() == token
        assert (files / "proxy" / "venv" / "bin" / "python").exists()  # opsconsole in a venv on that host
        assert token not in "\n".join(map(repr, events))  # no event field: no command, no line, no message

        # From outside the bastion: the admin API through an SSH forward, clients on the public leg.
        try:
            driver = await until(lambda: _try_open(t, token), "the proxy's runtime file on the proxy host")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{(await t.run('tail -20 log/proxy.log')).stdout}") from None
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                async def answers(n: int) -> list[str]:
                    return [(await client.get(url)).text.strip() for _ in range(n)]

                await until(lambda: _reachable(client, url), "the proxy's public listener")
                assert set(await answers(10)) == {stable}
                state = await driver.set_canary_percent("web", 50)  # weights changed from the console
                assert state.pools["canary"].weight == 50
                await until(lambda: _healthy(driver, canary), "the canary healthy")
                seen = await answers(20)
                assert {stable, canary} <= set(seen), seen

                # Canary SIGKILL under load: every client request still answered 200.
                errors: list[str] = []
                done = asyncio.Event()

                async def load() -> int:
                    n = 0
                    while not done.is_set():
                        try:
                            r = await client.get(url)
                            if r.status_code != 200:
                                errors.append(f"{r.status_code} {r.text[:80]}")
                        except httpx.HTTPError as exc:
                            errors.append(repr(exc))
                        n += 1
                    return n

                loaders = [asyncio.create_task(load()) for _ in range(4)]
                await asyncio.sleep(0.5)  # load flowing over both pools before the kill
                pid = await canary_t.service_pid("web")
                assert pid is not None
                await canary_t.run(f"kill -9 {pid}")
                await until(lambda: _unhealthy(driver, canary), "the canary seen dead")
                await asyncio.sleep(0.5)
                done.set()
                sent = sum(await asyncio.gather(*loaders))
                assert sent > 50 and errors == [], (sent, errors[:5])
                assert set(await answers(10)) == {stable}
        finally:
            await driver.close()
    finally:
        for name in (lab.apps[0].name, lab.apps[1].name):
            await SshTransport(lab_host(lab, name, port=PORT), pool).stop_service("web")
        await SshTransport(lab_host(lab, "proxy"), pool).stop_service("proxy")
        await pool.close()


async def _try_open(t: SshTransport, token: str):  # type: ignore[no-untyped-def]
    try:
        return await open_remote_embedded(t, "run/proxy.json", token)
    except Exception:
        return None


async def _reachable(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def _healthy(driver, member: str) -> bool:  # type: ignore[no-untyped-def]
    app = await driver.app("web")
    return any(m.name == member and m.healthy for p in app.pools.values() for m in p.members)


async def _unhealthy(driver, member: str) -> bool:  # type: ignore[no-untyped-def]
    return not await _healthy(driver, member)

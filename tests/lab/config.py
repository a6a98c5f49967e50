"""An opsconsole config for the lab: itrust on the lab's app hosts, reached through its jump host."""

from __future__ import annotations

import textwrap
from pathlib import Path

from .lab import Lab

ROOT = Path(__file__).resolve().parents[2]


def write_lab_config(tmp: Path, lab: Lab, *, port: int = 8080, extra: str = "", rollout: str = "",
                     jump: tuple[str, int] | None = None, known_hosts: Path | None = None) -> Path:
    """`rollout`: the app's `rollout:` settings as flow YAML, e.g. "{deploy_timeout: 5s}". `jump` (address,
    port) and `known_hosts`: reach the jump host elsewhere than its own address (bench/delay.py's slow link)."""
    jump_address, jump_port = jump or (lab.jump.address, 22)
    hosts = ", ".join(f"{{name: {h.name}, address: {h.address}, port: {port}, user: {lab.user}}}" for h in lab.apps)
    cfg = tmp / "lab.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        project: lab
        state_dir: {tmp / 'state'}
        heartbeat:
          interval: 0.3s
          timeout: 1s
          fall: 3
          rise: 2
        groups:
          itrust:
            provider: static
            role: app
            hosts: [{hosts}]
        apps:
          itrust:
            group: itrust
            repo: {tmp / 'repo'}
            demo_repo: true
            build:
              commands: [sh build.sh]
              artifact: dist/app.tar.gz
            deploy:
              playbook: {ROOT / 'playbooks' / 'itrust-deploy.yml'}
            service:
              # the app listens on the host's address: the proxy host must reach it
              command: python3 current/app.py --port {{{{ port }}}} --bind 0.0.0.0
            health:
              path: /health
            vars:
              health_timeout: 10s
            rollout: {rollout or '{}'}
        jump:
          host: {jump_address}
          port: {jump_port}
          user: {lab.user}
          key: {lab.client_key}
        ssh:
          known_hosts: {known_hosts or lab.known_hosts}
          identity_files: [{lab.client_key}]
          agent: false
        """) + extra)
    return cfg

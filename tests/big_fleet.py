"""The 2,000-host config of the console's scale test and its latency bench: local groups of up to 500 hosts
(a big fleet is grouped) and one app, so the fleet pane has groups to fold, filter and sort."""

from __future__ import annotations

import textwrap
from pathlib import Path

GROUPS = ("web", "api", "batch", "edge")
PER_GROUP = 500
_PLAYBOOK = Path(__file__).resolve().parent.parent / "playbooks" / "itrust-deploy.yml"


def big_fleet_config(tmp: Path, hosts: int = len(GROUPS) * PER_GROUP, project: str = "big") -> Path:
    """opsconsole.yaml in `tmp` for `hosts` local hosts: PER_GROUP a group in GROUPS' order, the last group
    taking any beyond 2,000; each group has its own 5,000 ports from 30000."""
    cfg = tmp / "opsconsole.yaml"
    counts = [min(PER_GROUP, hosts - i * PER_GROUP) for i in range(len(GROUPS)) if hosts > i * PER_GROUP]
    counts[-1] += hosts - sum(counts)
    groups = "".join(f"  {name}:\n    provider: local\n    role: app\n    count: {count}\n"
                     f"    base_port: {30000 + i * 5000}\n" for i, (name, count) in enumerate(zip(GROUPS, counts)))
    cfg.write_text(f"project: {project}\nstate_dir: {tmp / 'state'}\ngroups:\n{groups}" + textwrap.dedent(f"""\
        apps:
          web:
            group: web
            repo: {tmp / 'repo'}
            build:
              commands: [sh build.sh]
              artifact: dist/app.tar.gz
            deploy:
              playbook: {_PLAYBOOK}
        """))
    return cfg

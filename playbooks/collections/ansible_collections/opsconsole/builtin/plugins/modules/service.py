#!/usr/bin/python
# Under ansible-playbook this module only refuses: the service it starts is opsconsole's own
# (pid file and log under the host root, tracked by the console's transport), which Ansible
# cannot start the same way. It is here so that ansible-playbook resolves the name.
from __future__ import annotations

DOCUMENTATION = r"""
module: service
short_description: Start, stop or restart a command as a detached service (opsconsole's native runner only)
description:
  - The process runs detached, its pid in C(run/NAME.pid) and its output in C(log/NAME.log) under the host root.
  - Runs under opsconsole's native runner only; under ansible-playbook it fails with a message saying so.
options:
  name: {description: The service name (pid file and log names)., type: str, required: true}
  state: {description: What to make true., type: str, required: true, choices: [started, stopped, restarted]}
  command: {description: The shell command that runs the service (needed for started and restarted)., type: str}
  chdir: {description: Directory to start it in, relative to the host root., type: str}
  env: {description: Extra environment variables., type: dict}
  port: {description: The TCP port it listens on; a port another program holds is refused before the start., type: raw}
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", required=True, choices=["started", "stopped", "restarted"]),
            command=dict(type="str"), chdir=dict(type="str"), env=dict(type="dict"), port=dict(type="raw"),
        ),
        supports_check_mode=True,
    )
    module.fail_json(msg="opsconsole.builtin.service runs under opsconsole's native runner only "
                         "(`opsconsole ... playbook run`); ansible-playbook cannot start an opsconsole service")


if __name__ == "__main__":
    main()

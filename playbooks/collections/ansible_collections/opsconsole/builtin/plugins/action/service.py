# The controller half of opsconsole.builtin.service under ansible-playbook: the module needs the host
# root (where run/NAME.pid and log/NAME.log live, what a relative chdir is relative to), which is an
# inventory variable (`host_root`, written by opsconsole) that a module on the host cannot read.
from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        root = task_vars.get("host_root")
        # Without opsconsole's inventory the login's home is the root, as a relative path means there.
        args["_root"] = str(self._templar.template(root)) if root else "~"
        result.update(self._execute_module(module_name="opsconsole.builtin.service", module_args=args,
                                           task_vars=task_vars))
        return result

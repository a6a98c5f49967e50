"""Playbooks: an Ansible-shaped subset (plays, serial, vars, tasks, handlers, Jinja2) run over transports."""

from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.model import Play, Playbook, PlaybookResult, Task
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.playbook.templating import TemplateFailure, render_string

__all__ = ["Play", "Playbook", "PlaybookResult", "PlaybookRunner", "Task", "TemplateFailure", "load_playbook",
           "render_string"]

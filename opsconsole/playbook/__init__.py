"""Playbooks: an Ansible-shaped subset (plays, serial, vars, tasks, handlers, Jinja2) run over transports.

`loader.load_playbook` reads one, `runner.PlaybookRunner` runs it, `model` holds the types. This
package re-exports nothing: its modules import each other, and a package importing them back would
close an import circle.
"""

"""Ansible's keywords mean what Ansible means: one playbook (tests/playbooks/keywords/site.yml, with
vars_files, loop, with_items, register, set_fact, assert, notify/handlers, changed_when, failed_when,
ignore_errors, block/rescue/always, include_tasks, import_tasks, tags) run natively and by real
ansible-playbook (`-c local`) leaves the same files with the same modes and reports the same changes;
a second run changes nothing and fires no handler."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_twin import ansible_run, tree, twins
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

SITE = Path(__file__).resolve().parent / "playbooks" / "keywords" / "site.yml"


native, _ = twins(SITE)  # (ansible below also checks the recap's rescued and ignored)


def ansible(tmp_path: Path, root: Path, *args: str) -> int:
    counts = ansible_run(tmp_path, SITE, {"host_root": str(root)}, *args)
    assert counts["failed"] == 0 and counts["rescued"] == 1 and counts["ignored"] == 1, counts
    return counts["changed"]


async def test_keywords_give_the_same_end_state_as_ansible_playbook_and_a_second_run_changes_nothing(
        rig: Rig, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    changed_ours, changed_theirs = await native(rig, ours), ansible(tmp_path, theirs)
    assert tree(ours) == tree(theirs)
    assert changed_ours == changed_theirs
    files = tree(ours)
    assert files["conf/app.conf"] == ("0o640", "app=demo\nlisten=8001,8002\n")  # vars_files beat play vars
    assert {"conf/port-8001", "conf/port-8002", "conf/rescued", "conf/always", "conf/included",
            "conf/imported", "conf/tagged"} <= set(files)
    assert "conf/unreached" not in files and "conf/skipped" not in files
    assert files["log/handler.log"][1] == "restarted\n"  # notified, ran once at the end of the play
    statuses = rig.statuses("localhost")
    assert statuses["fails"] == "failed" and statuses["rescued"] == "changed"
    assert statuses["a failure that is ignored"] == "failed" and statuses["failed_when decides"] == "ok"
    assert statuses["only on the first run"] == "ok" and statuses["skipped"] == "skipped"

    # Idempotence: a second run changes nothing and the handler does not fire again.
    assert await native(rig, ours) == 0
    assert ansible(tmp_path, theirs) == 0
    assert tree(ours) == tree(theirs) and tree(ours)["log/handler.log"][1] == "restarted\n"
    assert rig.statuses("localhost")["only on the first run"] == "skipped"


@pytest.mark.parametrize("tags, skip, tagged_runs", [(("extra",), (), True), ((), ("extra",), False),
                                                     (("untagged",), (), False)])
async def test_tags_select_the_same_tasks_as_ansible_playbook(rig: Rig, tmp_path: Path, tags: tuple[str, ...],
                                                            skip: tuple[str, ...], tagged_runs: bool) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for d in (ours / "conf", ours / "log", theirs / "conf", theirs / "log"):
        d.mkdir(parents=True, mode=0o755)
        d.chmod(0o755)
    args = [*(["--tags", ",".join(tags)] if tags else []), *(["--skip-tags", ",".join(skip)] if skip else [])]
    ansible_run(tmp_path, SITE, {"host_root": str(theirs)}, *args)
    await native(rig, ours, tags=tags or None, skip_tags=skip)
    assert tree(ours) == tree(theirs)
    ran = set(tree(ours))
    assert ("conf/tagged" in ran) == ("conf/imported" in ran) == tagged_runs
    assert ("conf/app.conf" in ran) == (not tagged_runs)
    assert "log/always-tag" in ran  # `always` runs whatever --tags says

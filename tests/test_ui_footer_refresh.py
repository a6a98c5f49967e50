"""The footer is re-made only when the keys it shows change (issue 18: key-to-screen at 2,000 hosts).

Re-making it mounts every key anew and lays out the whole screen; on every cursor move under an event
flood that was the frame the next key press waited behind. A move between two host rows changes no key;
a move onto a group's summary row does (`d describe` has nothing to describe there), and must still show.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from textual.widgets import Footer

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.fleet_groups import group_key
from opsconsole.ui.testing import screen_text
from test_ui import until


def grouped_engine(tmp: Path) -> Engine:
    """Two local groups of 30 hosts: a grouped fleet (over 50 hosts), each group folded (over 20)."""
    groups = "".join(f"  {g}:\n    provider: local\n    role: app\n    count: 30\n    base_port: {32000 + i * 100}\n"
                     for i, g in enumerate(("web", "api")))
    cfg = tmp / "opsconsole.yaml"
    cfg.write_text(f"project: footer\nstate_dir: {tmp / 'state'}\ngroups:\n{groups}" + textwrap.dedent(f"""\
        apps:
          web:
            group: web
            repo: {tmp / 'repo'}
            build:
              commands: [sh build.sh]
              artifact: dist/app.tar.gz
            deploy:
              playbook: {Path(__file__).parent.parent / 'playbooks' / 'itrust-deploy.yml'}
        """))
    return Engine(load_config(cfg))


async def test_moving_between_hosts_keeps_the_footer_and_a_group_row_changes_it(tmp_path: Path) -> None:
    app = OpsConsoleApp(grouped_engine(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.query_one(FleetPane)
        table = fleet.table

        def footer() -> str:
            return screen_text(app).splitlines()[-1]

        await until(pilot, lambda: fleet.selected_group() == "web" and fleet.selected_host() is None,
                    what="the cursor on web's summary row")
        await until(pilot, lambda: "describe" not in footer(), what=f"a group row's footer: {footer()}")
        await pilot.press("o")  # unfold web: its hosts' rows follow its summary row
        await until(pilot, lambda: "web-1" in table.rows, what="web unfolded")
        order = [str(key.value) for key in table.rows]  # web's hosts in the table's (name) order
        first = order.index(group_key("web")) + 1
        await pilot.press("down")
        await until(pilot, lambda: fleet.selected_host() == order[first], what="the cursor on web's first host")
        await until(pilot, lambda: "d describe" in footer(), what="a host row's footer")

        remade: list[int] = []
        bar = app.query_one(Footer)
        recompose = bar.recompose

        async def counted() -> None:
            remade.append(1)
            await recompose()

        bar.recompose = counted  # type: ignore[method-assign]
        for key, step in (("down", 1), ("down", 2), ("down", 3), ("up", 2)):
            expected = order[first + step]
            await pilot.press(key)
            await until(pilot, lambda: fleet.selected_host() == expected, what=f"the cursor on {expected}")
            await pilot.pause(0.05)  # the footer re-makes itself after a refresh: give it one to show up
        assert remade == [], f"the footer was re-made {len(remade)} times for moves that change none of its keys"
        assert "d describe" in footer(), footer()

        table.move_cursor(row=table.get_row_index(group_key("web")), animate=False)
        await until(pilot, lambda: fleet.selected_host() is None, what="the cursor back on web's row")
        await until(pilot, lambda: "describe" not in footer(), what="`d` leaving the footer on a group row")
        assert remade, "the footer changed without being re-made?"

"""Files shipped inside the package: the console's themes, the starter playbooks, the demo app.

They are found through importlib.resources, so they are where pip put them — never
relative to a checkout. `themes/` and `playbooks/` live at the top of the repository
(where people look for them); `opsconsole/themes` and `opsconsole/playbooks` are
symlinks to them, so an editable install reads the checkout and a wheel build copies
their files into the package (see `[tool.setuptools.package-data]` in pyproject.toml).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def bundled_path(*parts: str) -> Path:
    """The installed file or directory `parts` under the package, as a real filesystem path.

    Textual and the playbook loader want paths; pip installs packages unzipped, so the
    package's resources are plain files. A zipped install would be refused here, clearly.
    """
    resource = files("opsconsole").joinpath(*parts)
    if not isinstance(resource, Path):
        raise RuntimeError(f"opsconsole's bundled {'/'.join(parts)} is not a plain file ({resource!r}); "
                           "install opsconsole unzipped (pip and pipx do)")
    return resource

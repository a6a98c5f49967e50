"""A tiny local apt repository for the apt tests: packages built with dpkg-deb, indexed with
dpkg-scanpackages, each installing one file under /opt/<package>/."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def build_package(out: Path, name: str, version: str, recommends: str = "") -> Path:
    """ocl package `name` at `version` in `out`; it installs /opt/NAME/version.txt."""
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"{name}_{version}_all.deb"
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        (tree / "DEBIAN").mkdir()
        (tree / "opt" / name).mkdir(parents=True)
        (tree / "opt" / name / "version.txt").write_text(f"{name} {version}\n")
        control = (f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: lab <lab@example.com>\n"
                   + (f"Recommends: {recommends}\n" if recommends else "") + f"Description: {name} for the lab\n")
        (tree / "DEBIAN" / "control").write_text(control)
        tree.chmod(0o755)  # dpkg-deb wants the package's directories readable by all
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], check=True, capture_output=True)
    return deb


def index(repo: Path) -> None:
    """Packages for apt (`deb [trusted=yes] file:REPO ./`) from the .deb files at the top of `repo`."""
    done = subprocess.run(["dpkg-scanpackages", "-m", "."], cwd=repo, check=True, capture_output=True)
    (repo / "Packages").write_bytes(done.stdout)


def sources_line(repo: Path) -> str:
    return f"deb [trusted=yes] file:{repo} ./\n"

"""The README documents every setting and keeps its quickstart commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from statekeeper.settings import SETTINGS, Setting

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(setting: Setting) -> None:
    assert f"`{setting.name}`" in README
    assert f"`{setting.env}`" in README


def test_quickstart_commands_are_in_readme_and_makefile() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    for target in ("serve", "test"):
        assert f"make {target}" in README
        assert f"\n{target}:" in makefile

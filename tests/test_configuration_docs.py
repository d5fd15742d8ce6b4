"""docs/configuration.md documents every setting (env var, flag, default) and carries a
complete TOML example that loads; every setting's flag exists on the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from statekeeper.cli import resolve
from statekeeper.cli.options import GLOBAL_FLAGS
from statekeeper.settings import SETTINGS, Setting, load_settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()


def _rows() -> dict[str, str]:
    rows = {}
    for line in CONFIGURATION.splitlines():
        m = re.match(r"\| `(\w+)` \|", line)
        if m:
            rows[m.group(1)] = line
    return rows


def _toml_example() -> str:
    m = re.search(r"```toml\n(.*?)```", CONFIGURATION, re.S)
    assert m, "docs/configuration.md has a TOML example"
    return m.group(1)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_in_the_table(setting: Setting) -> None:
    row = _rows().get(setting.name)
    assert row is not None, f"{setting.name} has no row in docs/configuration.md"
    assert f"`{setting.env}`" in row
    if setting.flag:
        assert f"{setting.flag}" in row
    else:
        assert "| none" in row, f"{setting.name}: say that no flag sets it"


def test_the_table_has_no_setting_the_code_lacks() -> None:
    assert set(_rows()) == {s.name for s in SETTINGS}


def test_the_toml_example_has_every_setting_and_loads(tmp_path: Path) -> None:
    example = _toml_example()
    for s in SETTINGS:
        line = rf"^\[\[{s.name}\]\]$" if s.tables else rf"^(# )?{s.name} = "
        assert re.search(line, example, re.M), f"{s.name} is not in the example"
    path = tmp_path / "statekeeper.toml"
    path.write_text(example)
    secret = tmp_path / "hook-secret"
    secret.write_text("whsec_from_a_file\n")
    # The example's secret_file, here in a temporary directory.
    path.write_text(example.replace("/etc/statekeeper/chatops-hook-secret", str(secret)))
    settings = load_settings(config_file=path, env={})
    assert settings.locks is not None and settings.locks.count(",") == 1
    (hook,) = settings.hooks
    assert (hook.name, hook.states) == ("chatops", ("team/**",))
    assert hook.secret.read(hook.name, {}) == "whsec_from_a_file"


def test_every_settings_flag_exists() -> None:
    serve = resolve("serve")
    serve_flags = {opt for p in serve.params for opt in getattr(p, "opts", [])}
    for s in SETTINGS:
        if s.flag:
            assert s.flag in GLOBAL_FLAGS or s.flag in serve_flags, s.flag

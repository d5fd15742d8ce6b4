"""Settings: defaults < TOML file < STATEKEEPER_* env < flags; bad values are ConfigError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from statekeeper.errors import ConfigError
from statekeeper.settings import SETTINGS, Settings, format_size, load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.data_dir == Path(".statekeeper")
    assert settings.store_url == "sqlite:///.statekeeper/statekeeper.db"
    assert settings.locks_url == settings.store_url


def test_every_setting_has_a_default_matching_the_dataclass() -> None:
    defaults = Settings()
    for setting in SETTINGS:
        assert getattr(defaults, setting.name) == setting.default, setting.name
        assert setting.help


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    config = write(
        tmp_path / "statekeeper.toml",
        'port = 9001\nlog_level = "debug"\nmax-body = "2M"\nhost = "::1"\n',
    )
    env = {"STATEKEEPER_PORT": "9002", "STATEKEEPER_MAX_BODY": "3k"}

    from_file = load_settings(env={}, config_file=config)
    assert (from_file.port, from_file.log_level, from_file.max_body) == (9001, "debug", 2 * 1024**2)

    from_env = load_settings(env=env, config_file=config)
    assert from_env.port == 9002  # env beats the file
    assert from_env.max_body == 3 * 1024
    assert from_env.log_level == "debug"  # the file beats the default
    assert from_env.host == "::1"

    from_flags = load_settings({"port": 9003, "host": None}, env=env, config_file=config)
    assert from_flags.port == 9003  # flags beat everything
    assert from_flags.host == "::1"  # a flag left unset does not override
    assert from_flags.max_body == 3 * 1024


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", f'data_dir = "{tmp_path / "d"}"\n')
    settings = load_settings(env={"STATEKEEPER_CONFIG": str(config)})
    assert settings.data_dir == tmp_path / "d"
    assert settings.store_url == f"sqlite:///{tmp_path / 'd' / 'statekeeper.db'}"


def test_store_and_locks_urls() -> None:
    settings = load_settings(
        {"store": "s3://bucket/prefix"}, env={"STATEKEEPER_LOCKS": "dynamodb://table"}
    )
    assert settings.store_url == "s3://bucket/prefix"
    assert settings.locks_url == "dynamodb://table"
    assert load_settings({"store": "s3://b"}, env={}).locks_url == "s3://b"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STATEKEEPER_PORT": "eighty"}, "STATEKEEPER_PORT"),
        ({"STATEKEEPER_MAX_BODY": "lots"}, "STATEKEEPER_MAX_BODY"),
        ({"STATEKEEPER_MAX_BODY": "1.5.2M"}, "STATEKEEPER_MAX_BODY"),
    ],
)
def test_bad_environment_values_are_config_errors(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env=env)
    assert named in err.value.message
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('port = "eighty"\n', "port"),
        ("port = 80.5\n", "port"),
        ('max_body = "x"\n', "max_body"),
        ('colour = "blue"\n', "unknown setting 'colour'"),
        ("[server]\nport = 1\n", "unknown setting 'server'"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_bad_config_files_are_config_errors(tmp_path: Path, text: str, named: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, config_file=config)
    assert named in err.value.message
    assert str(config) in err.value.message


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(env={}, config_file=tmp_path / "absent.toml")


def test_flags_are_parsed_like_the_environment(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path), "port": "9001", "max_body": "2K"}, env={})
    assert settings.data_dir == tmp_path
    assert settings.port == 9001
    assert settings.max_body == 2048
    assert settings.store_url == f"sqlite:///{tmp_path / 'statekeeper.db'}"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STATEKEEPER_MAX_BODY", "-5"),
        ("STATEKEEPER_MAX_BODY", "0"),
        ("STATEKEEPER_PORT", "0"),
        ("STATEKEEPER_PORT", "70000"),
    ],
)
def test_out_of_range_numbers_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env={name: value})


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (512 * 1024**2, "512 MiB")],
)
def test_sizes_are_written_humanly(n: int, text: str) -> None:
    assert format_size(n) == text


def test_locks_as_a_toml_list_or_a_string(tmp_path: Path) -> None:
    listed = write(tmp_path / "a.toml", 'locks = ["dynamodb://t?region=eu-west-1", "s3lock://b"]\n')
    as_list = load_settings(config_file=listed, env={})
    joined = write(tmp_path / "b.toml", 'locks = "dynamodb://t?region=eu-west-1,s3lock://b"\n')
    assert as_list.locks == load_settings(config_file=joined, env={}).locks
    assert as_list.locks == "dynamodb://t?region=eu-west-1,s3lock://b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('store = ["s3://a", "s3://b"]\n', "store takes one value, not a list"),
        ("locks = []\n", "locks must be a list of URLs"),
        ('locks = ["dynamodb://t", 3]\n', "locks must be a list of URLs"),
        ('workspace_key_prefix = "env:/"\n', "must not start or end with '/'"),
    ],
)
def test_bad_config_values_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_settings(config_file=write(tmp_path / "c.toml", text), env={})
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("keep_last", [-1, 0])
def test_keep_last_is_refused_below_one_with_a_message_that_says_so(
    tmp_path: Path, keep_last: int
) -> None:
    rule = f'[[history.retention]]\nstates = "**"\nkeep_last = {keep_last}\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=write(tmp_path / "c.toml", rule), env={})
    assert (
        f"keep_last must be a whole number ≥ 1 (1 keeps only the current version), not {keep_last}"
        in caught.value.message
    )
    kept = load_settings(
        config_file=write(tmp_path / "ok.toml", rule.replace(f"= {keep_last}", "= 1")), env={}
    )
    assert kept.history.retention[0].keep_last == 1


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.key", " \n")
    for name in ("STATEKEEPER_MASTER_KEY_FILE", "STATEKEEPER_SESSION_SECRET_FILE"):
        with pytest.raises(ConfigError, match=f"{name}: the file {re.escape(str(empty))} is empty"):
            load_settings(env={name: str(empty)})


def test_a_variable_set_to_nothing_leaves_an_optional_setting_unset(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", 'store = "s3://from-the-file"\n')
    env = {"STATEKEEPER_MASTER_KEY": "", "STATEKEEPER_STORE": "", "STATEKEEPER_TLS_CERT": ""}
    settings = load_settings(env=env, config_file=config)
    assert settings.master_key is None and settings.tls_cert is None
    assert settings.store == "s3://from-the-file"
    # A setting that has a value by default needs one.
    with pytest.raises(ConfigError, match="STATEKEEPER_PORT"):
        load_settings(env={"STATEKEEPER_PORT": ""})


@pytest.mark.parametrize("text", ['master_key = ""\n', 'session_secret = "  "\n'])
def test_a_blank_secret_in_the_file_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        load_settings(env={}, config_file=write(tmp_path / "c.toml", text))


@pytest.mark.parametrize("text", ["verbose", "inf0", "trace", ""])
def test_a_log_level_is_one_of_the_levels(text: str) -> None:
    with pytest.raises(ConfigError, match="the log level is one of debug, info, warning"):
        load_settings({"log_level": text}, env={})


def test_warn_is_warning_and_levels_are_not_case_sensitive() -> None:
    assert load_settings(env={"STATEKEEPER_LOG_LEVEL": "warn"}).log_level == "warning"
    assert load_settings(env={"STATEKEEPER_LOG_LEVEL": "DEBUG"}).log_level == "debug"


@pytest.mark.parametrize("text", ["infK", "-infM", "1e400G", "nanK"])
def test_a_size_is_a_finite_number(text: str) -> None:
    with pytest.raises(ConfigError, match="STATEKEEPER_MAX_BODY"):
        load_settings(env={"STATEKEEPER_MAX_BODY": text})


def test_a_config_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes("# café\nport = 9001\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"the config file {config} is not UTF-8 text"):
        load_settings(env={}, config_file=config)


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("request_timeout", "nan", "a number of seconds from 0 (0: no limit) up"),
        ("request_timeout", "-1", "a number of seconds from 0 (0: no limit) up"),
        ("header_timeout", "nan", "a number of seconds from 0 (0: no limit) up"),
        ("header_timeout", "-5", "a number of seconds from 0 (0: no limit) up"),
        ("rate_limit", "nan", "a number of requests per second from 0 (0: no limit) up"),
        ("rate_limit", "-1", "a number of requests per second from 0 (0: no limit) up"),
        ("hooks_stale_after", "-1", "a number of seconds from 0 (0: never) up"),
        ("lock_wait", "inf", "a number of seconds from 0 (0: answer at once) up"),
        ("ready_timeout", "-1", "a number of seconds more than 0"),
        ("ready_timeout", "nan", "a number of seconds more than 0"),
        ("ready_timeout", "0", "a number of seconds more than 0"),
        ("hooks_backoff", "0", "a number of seconds more than 0"),
        ("session_hours", "-12", "a number of hours more than 0"),
        ("inventory_refresh", "soon", "a number of seconds"),
        ("max_connections", "0", "a whole number from 1 up"),
        ("hooks_attempts", "0", "a whole number from 1 up"),
        ("hooks_attempts", "-5", "a whole number from 1 up"),
        ("rate_burst", "1.5", "must be a whole number"),
        ("port", "abc", "must be a whole number"),
        ("port", "", "must be a whole number"),
    ],
)
def test_numbers_out_of_their_range_are_refused_with_the_range(
    name: str, value: str, said: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={f"STATEKEEPER_{name.upper()}": value})
    assert f"STATEKEEPER_{name.upper()}: {name} = {value!r} is not valid: " in err.value.message
    assert said in err.value.message
    assert "invalid literal" not in err.value.message


def test_zero_is_kept_where_it_means_no_limit_and_nan_is_refused(tmp_path: Path) -> None:
    zeros = (
        "request_timeout = 0\nheader_timeout = 0\nrate_limit = 0\nhooks_stale_after = 0\n"
        "lock_wait = 0\ninventory_refresh = 0\n"
    )
    settings = load_settings(env={}, config_file=write(tmp_path / "c.toml", zeros))
    assert settings.request_timeout == settings.rate_limit == settings.lock_wait == 0
    with pytest.raises(ConfigError, match="ready_timeout"):
        load_settings(
            env={}, config_file=write(tmp_path / "c.toml", zeros + "ready_timeout = nan\n")
        )


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        (
            "keep_last = 0",
            "keep_last must be a whole number ≥ 1 (1 keeps only the current version)",
        ),
        ('keep_for = "0s"', 'keep_for = "0s" would keep only the current version'),
        ('keep_last = 5\nkeep_for = "0d"', 'keep_for = "0d" would keep only the current version'),
    ],
)
def test_a_retention_rule_that_keeps_only_the_current_version_is_refused(
    tmp_path: Path, rule: str, said: str
) -> None:
    config = write(
        tmp_path / "c.toml", f'[history]\n[[history.retention]]\nstates = "prod/**"\n{rule}\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, config_file=config)
    assert str(config) in err.value.message and said in err.value.message

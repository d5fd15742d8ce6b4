"""hooks_allow: hosts, addresses and networks; anything else is refused at start, not
kept as a host name that never matches."""

from __future__ import annotations

import ipaddress

import pytest

from statekeeper.errors import ConfigError
from statekeeper.hooks.guard import parse_allow
from statekeeper.settings import load_settings


@pytest.mark.parametrize(
    "entry", ["127.0.0.1:9999", "hooks.internal:8443", "10.0.0.0/33", "not a host!!", "300.1.1.1"]
)
def test_an_entry_that_is_no_host_or_network_is_refused(entry: str) -> None:
    assert parse_allow("127.0.0.1, ::1, 10.0.0.0/8, Hooks.Internal") == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.0.0.0/8"),
        "hooks.internal",
    )
    with pytest.raises(ConfigError) as err:
        load_settings(env={"STATEKEEPER_HOOKS_ALLOW": f"10.0.0.5,{entry}"})
    assert f"{entry!r} is neither a host name, an address nor a network" in err.value.message
    assert "hosts or networks without ports" in err.value.message

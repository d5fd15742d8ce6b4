"""The store's wrappers (metrics, encryption) pass every call to the driver they wrap."""

from __future__ import annotations

import inspect

import pytest

from statekeeper.storage.base import ObjectStore
from statekeeper.storage.encrypting import EncryptingStore
from statekeeper.storage.metered import MeteredStore

#: What a store answers, as ObjectStore declares it: methods and properties.
ANSWERS = sorted(
    name
    for name, value in vars(ObjectStore).items()
    if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
)


@pytest.mark.parametrize("wrapper", [MeteredStore, EncryptingStore])
def test_a_wrapper_answers_every_call_itself(wrapper: type[ObjectStore]) -> None:
    """A wrapper inheriting one of ObjectStore's defaults would answer from that default
    (a listing, three reads) instead of the wrapped driver's own index or transaction."""
    assert "count_newer" in ANSWERS and "with_previous" in ANSWERS
    assert [name for name in ANSWERS if name not in vars(wrapper)] == []

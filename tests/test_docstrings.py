"""The examples in kdc's docstrings run and print what they say."""

import doctest
import importlib
from pathlib import Path

import pytest

import kdc

ROOT = Path(kdc.__file__).parent
MODULES = sorted(
    ".".join(("kdc", *path.relative_to(ROOT).with_suffix("").parts))
    for path in ROOT.rglob("*.py") if ">>> " in path.read_text()
)


def test_examples_are_found():
    assert {"kdc.compress.teachers.sft", "kdc.data.augment"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

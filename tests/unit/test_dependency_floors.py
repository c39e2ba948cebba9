"""The package declares the security floors of what it imports, and nothing it must not."""

from __future__ import annotations

import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.tap_cli import REPO_ROOT

#: (distribution, last version with the advisory, first fixed version)
FLOORS = (
    # Netrc credentials leaked to third-party hosts (CVE-2024-47081).
    ("requests", "2.32.3", "2.32.4"),
    # The OpenSSL bundled in wheels before 44.0.1 (CVE-2024-12797).
    ("cryptography", "44.0.0", "44.0.1"),
    # Decompression bombs through streamed reads and unbounded encoding chains (2.6.0).
    ("urllib3", "2.5.0", "2.6.0"),
)


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return {req.name.lower(): req for req in requirements}


@pytest.mark.parametrize(("name", "vulnerable", "fixed"), FLOORS)
def test_a_security_floor_is_declared_directly(name: str, vulnerable: str, fixed: str) -> None:
    declared = _declared()
    assert name in declared, f"{name} is not declared in pyproject.toml dependencies"
    specifier = declared[name].specifier
    assert Version(vulnerable) not in specifier, f"{name} {vulnerable} is still allowed"
    assert Version(fixed) in specifier
    assert Version(metadata.version(name)) in specifier, f"the installed {name} is below it"


def test_click_is_declared_because_the_code_imports_it() -> None:
    assert "click" in _declared()


def test_the_old_backoff_distribution_is_never_declared() -> None:
    # singer-sdk brings python-backoff, which provides the same module name.
    assert "backoff" not in _declared()

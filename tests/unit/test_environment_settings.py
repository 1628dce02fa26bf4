"""The storage clients read proxies and ~/.netrc from the environment only where there are some:
aiohttp would otherwise look them up again on every request."""

from __future__ import annotations

from pathlib import Path

import pytest

from licshift.adapters.clients import environment_settings


def test_without_proxies_or_netrc_the_clients_skip_the_lookup(tmp_path: Path) -> None:
    assert environment_settings({"PATH": "/usr/bin", "HOME": str(tmp_path)}) == {"use_env_settings": False}


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "NETRC"])
def test_a_proxy_or_netrc_variable_keeps_the_sdk_default(name: str, tmp_path: Path) -> None:
    assert environment_settings({name: "http://proxy.contoso.example:3128"}, home=tmp_path) == {}


def test_an_empty_variable_is_not_a_proxy(tmp_path: Path) -> None:
    assert environment_settings({"HTTPS_PROXY": ""}, home=tmp_path) == {"use_env_settings": False}


def test_a_netrc_file_keeps_the_sdk_default(tmp_path: Path) -> None:
    (tmp_path / ".netrc").write_text("machine example.com login a password b\n")
    assert environment_settings({}, home=tmp_path) == {}

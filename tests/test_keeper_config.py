"""Named hives: config parsing and resolution (pure, no hive needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.config import DEFAULT_URL, ConfigError, KeeperConfig, config_path

CONFIG = """
default = "box"

[hives.box]
url = "https://box.lan:7835"
token = "secret"
cacert = "~/box.pem"

[hives.local]
url = "http://127.0.0.1:7835"
token_file = "{token_file}"
"""


@pytest.fixture
def config(tmp_path: Path) -> KeeperConfig:
    token_file = tmp_path / "local.token"
    token_file.write_text("from-file\n")
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(token_file=token_file))
    return KeeperConfig.load(path)


def test_names_urls_env_and_default(config: KeeperConfig) -> None:
    assert config.resolve("box", {}).url == "https://box.lan:7835"
    assert config.resolve("box", {}).token == "secret"
    assert config.resolve("box", {}).cacert == Path("~/box.pem").expanduser()
    assert config.resolve("local", {}).token == "from-file"
    assert config.resolve("http://10.0.0.1:1", {}).url == "http://10.0.0.1:1"
    assert config.resolve(None, {"HIVE_URL": "local"}).name == "local"
    assert config.resolve(None, {}).name == "box"  # the default
    assert KeeperConfig(hives={}).resolve(None, {}).url == DEFAULT_URL


def test_unknown_name_lists_the_known_ones(config: KeeperConfig) -> None:
    with pytest.raises(ConfigError, match="no hive named 'nope' \\(known: box, local\\)"):
        config.resolve("nope", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hives = 3", "must be a table"),
        ("[hives.x]\nport = 1", "needs url"),
        ('default = "y"\n[hives.x]\nurl = "http://a"', "is not one of"),
        ("not toml [", "cannot read"),
        ('[hives.x]\nurl = "http://a"\ntoken_file = "/nonexistent/t"', "token_file"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        KeeperConfig.load(path)
    assert "\n" not in str(info.value)


def test_missing_file_is_empty_and_path_follows_xdg(tmp_path: Path) -> None:
    assert KeeperConfig.load(tmp_path / "none.toml").hives == {}
    assert config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/keeper/config.toml")
    assert config_path({"KEEPER_CONFIG": "/y.toml"}) == Path("/y.toml")

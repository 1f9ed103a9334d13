"""``vigil chatops`` refuses a bad configuration in one line (exit 2) before it connects anywhere, reads
tokens from files without ever showing them, and re-reads the identity map when its file changes."""

from __future__ import annotations

import os
import pathlib

import pytest

from vigil import cli
from vigil.chatops import app, identity

MAP = "slack:\n  - user: U0ALICE\n    as: {user: alice@example.com}\n"


def _files(tmp_path: pathlib.Path) -> dict[str, str]:
    files = {"map": MAP, "bot": "xoxb-secret-bot-token", "app": "xapp-secret-app-token", "empty": "  \n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return {name: str(tmp_path / name) for name in files}


@pytest.mark.parametrize(("args", "words"), [
    ([], "--identity-map is required"),
    (["--identity-map", "{map}"], "enable Slack (--slack-bot-token-file) or Discord"),
    (["--identity-map", "{map}", "--slack-bot-token-file", "{bot}"],
     "--slack-mode socket needs --slack-app-token-file"),
    (["--identity-map", "{map}", "--slack-bot-token-file", "{bot}", "--slack-mode", "http"],
     "--slack-mode http needs --slack-signing-secret-file"),
    (["--identity-map", "{map}", "--slack-bot-token-file", "{empty}"], "--slack-bot-token-file {empty}: empty"),
    (["--identity-map", "{map}", "--slack-bot-token-file", "{map}missing"], "No such file or directory"),
    (["--identity-map", "{bot}", "--slack-bot-token-file", "{bot}", "--slack-app-token-file", "{app}"],
     "must be a mapping"),
    (["--identity-map", "{map}", "--discord-public-key-file", "{bot}", "--discord-channel", "1"],
     "--discord-channel needs --discord-bot-token-file"),
    (["--identity-map", "{map}", "--slack-bot-token-file", "{bot}", "--slack-app-token-file", "{app}",
      "--poll-interval", "0"], "--poll-interval must be between"),
    (["--identity-map", "{map}", "--slack-bot-token-file", "{bot}", "--slack-app-token-file", "{app}",
      "--llm-model", "x"], "--llm-base-url and --llm-model go together"),
])
def test_configuration_errors(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], args: list[str],
                              words: str) -> None:
    files = _files(tmp_path)
    argv = ["chatops", *[a.format(**files) for a in args]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vigil chatops: ") and words.format(**files) in err and len(err.splitlines()) == 1
    assert "secret-bot-token" not in err and "secret-app-token" not in err


def test_the_identity_map_is_reread_when_its_file_changes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(MAP)
    maps = app.MapFile(str(path))
    assert maps().resolve(identity.Platform.SLACK, "U0ALICE") == identity.Identity("alice@example.com")
    path.write_text(MAP.replace("U0ALICE", "U0BOBBY"))  # same size: the modification time tells
    os.utime(path, (1, 1))
    assert maps().resolve(identity.Platform.SLACK, "U0BOBBY") is not None
    path.write_text("slack: [{user: U0ALICE, as: {user: 'system:admin'}}]\n")  # refused: the last good map stays
    current = maps()
    assert current.resolve(identity.Platform.SLACK, "U0BOBBY") is not None
    assert current.resolve(identity.Platform.SLACK, "U0ALICE") is None

"""The champion history that `bertops models rollback` walks back, on a real MLflow registry (sqlite)."""

from __future__ import annotations

from pathlib import Path

from bertops.registry import CHAMPION_ALIAS, champion_history, open_client, rollback_champion, set_champion


def test_promoting_the_champion_again_leaves_rollback_pointing_at_the_one_before(tmp_path: Path) -> None:
    client = open_client("", tmp_path / "state")
    client.create_registered_model("news")
    for _ in range(2):
        client.create_model_version("news", source=str(tmp_path))
    set_champion(client, "news", "1")
    set_champion(client, "news", "2")
    set_champion(client, "news", "2")  # `bertops models promote 2` while 2 is champion
    assert champion_history(client, "news") == ["1", "2"]
    assert rollback_champion(client, "news") == "1"
    assert str(client.get_model_version_by_alias("news", CHAMPION_ALIAS).version) == "1"

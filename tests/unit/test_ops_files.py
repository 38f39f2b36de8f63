"""Files under ops/ that are generated from code stay in step with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.adapters.jetstream import stream_definition
from bridge.cli import main
from bridge.config.load import load_config

OPS = Path(__file__).resolve().parents[2] / "ops"


def test_stream_definition_json_matches_what_the_bridge_provisions() -> None:
    cfg = load_config(OPS / "config" / "busbridge.example.yaml")
    on_disk = (OPS / "nats" / "stream-ERRBUS.json").read_text(encoding="utf-8")
    assert on_disk == stream_definition(cfg.stream), (
        "run: busbridge stream-json -c ops/config/busbridge.example.yaml > ops/nats/stream-ERRBUS.json"
    )


def test_stream_json_command(capsys) -> None:
    assert main(["stream-json", "-c", str(OPS / "config" / "busbridge.example.yaml")]) == 0
    assert '"name": "ERRBUS"' in capsys.readouterr().out


@pytest.mark.parametrize("bucket", ["phase", "health"])
def test_kv_json_files_match_what_the_bridge_provisions(bucket: str, capsys) -> None:
    assert main(["kv-json", bucket, "-c", str(OPS / "config" / "busbridge.example.yaml")]) == 0
    on_disk = (OPS / "nats" / f"stream-KV_busbridge_{bucket}.json").read_text(encoding="utf-8")
    assert on_disk == capsys.readouterr().out, (
        f"run: busbridge kv-json {bucket} -c ops/config/busbridge.example.yaml"
        f" > ops/nats/stream-KV_busbridge_{bucket}.json"
    )

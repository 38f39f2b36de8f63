"""Plain secret values in the config are refused naming the key path and the key to use
instead, unless ``allow_plaintext_secrets: true``; ``check-config --show`` and config
errors never print a secret value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.cli import main
from bridge.config.load import parse_config
from bridge.config.plaintext import REDACTED, is_secret_key, redacted
from bridge.errors import ConfigError

SECRET = "Hunter2-very-secret"


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    assert SECRET not in str(info.value)
    return info.value.problems


def test_plain_password_is_refused_naming_the_key_to_use() -> None:
    [problem] = _problems(f"nats: {{user: bridge, password: {SECRET}}}\n")
    assert problem.startswith(
        "nats.password: plaintext secret refused; use nats.password_file or nats.password_env"
    )
    assert "allow_plaintext_secrets: true" in problem


def test_every_plain_secret_is_listed_with_its_path() -> None:
    problems = _problems(
        f"nats: {{token: {SECRET}, nkey_seed: {SECRET}, servers: ['nats://bob:{SECRET}@10.0.0.5:4222']}}\n"
        f"zmq: {{curve: {{server_secret_key: {SECRET}}}}}\n"
        f"flood: {{rules: [{{name: r, api_key: {SECRET}}}]}}\n"
    )
    by_path = {p.split(": ", 1)[0]: p for p in problems}
    secrets = [
        "nats.token",
        "nats.nkey_seed",
        "nats.servers[0]",
        "zmq.curve.server_secret_key",
        "flood.rules[0].api_key",
    ]
    assert set(secrets) <= set(by_path)
    assert len(problems) == len(by_path)  # each named once: not also as an unknown key
    # the list of rules is type-checked as a whole: its unknown field is a problem of its own
    assert set(by_path) - set(secrets) == {"flood.rules"}
    assert "use nats.nkey_seed_file or nats.nkey_seed_env" in by_path["nats.nkey_seed"]
    assert "credentials in a URL" in by_path["nats.servers[0]"]
    assert "*_file or *_env" in by_path["zmq.curve.server_secret_key"]


def test_references_to_secrets_are_not_secrets(tmp_path: Path) -> None:
    cfg = parse_config(
        f"nats: {{user: bridge, password_file: {tmp_path}/pw, token_env: TOK, nkey_seed: null, password: null}}\n"
        f"zmq: {{curve: {{server_secret_key_file: {tmp_path}/s.key_secret, allowed_clients_dir: {tmp_path}}}}}\n"
    )
    assert cfg.nats.password_file == f"{tmp_path}/pw" and cfg.nats.token_env == "TOK"
    assert not any(
        map(
            is_secret_key,
            ["password_file", "token_env", "allowed_clients_dir", "creds_file", "user"],
        )
    )


def test_names_and_non_scalar_values_are_not_taken_for_secrets() -> None:
    cfg = parse_config(
        "allow_plaintext_secrets: false\n"
        "health: {service_methods: {TokenizerAgent: [http], SecretManagerAgent: [http]}}\n"
    )
    assert set(cfg.health.service_methods) == {"TokenizerAgent", "SecretManagerAgent"}
    assert redacted(cfg)["allow_plaintext_secrets"] is False
    assert [
        is_secret_key(k)
        for k in ("tokens", "apiKey", "DB_PASS", "bypass", "passes", "max_tokens_secs")
    ] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_opt_out_accepts_plain_values_but_not_unknown_keys() -> None:
    cfg = parse_config(
        f"allow_plaintext_secrets: true\nnats: {{user: bridge, password: {SECRET}}}\n"
    )
    assert cfg.nats.password == SECRET
    [problem] = _problems(f"allow_plaintext_secrets: true\nzmq: {{secret: {SECRET}}}\n")
    assert problem == "zmq.secret: unknown key"


def test_check_config_refuses_and_never_prints_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        f"nats: {{servers: ['nats://bridge:{SECRET}@127.0.0.1:4222'], user: bridge, password: {SECRET}}}\n"
    )
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "nats.password: plaintext secret refused" in err and "nats.servers[0]" in err
    assert SECRET not in out + err


def test_check_config_show_redacts_values_and_keeps_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        "allow_plaintext_secrets: true\n"
        f"nats: {{servers: ['nats://bridge:{SECRET}@127.0.0.1:4222'], user: bridge, password: {SECRET}, "
        f"token: {SECRET}x, nkey_seed: {SECRET}y, creds_file: /etc/busbridge/bridge.creds}}\n"
    )
    assert main(["check-config", "--show", str(path)]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    shown = json.loads(out)["nats"]
    assert shown["password"] == shown["token"] == shown["nkey_seed"] == REDACTED
    assert (
        shown["servers"] == ["nats://***@127.0.0.1:4222"]
        and shown["creds_file"] == "/etc/busbridge/bridge.creds"
    )
    assert shown["user"] == "bridge"


def test_credentials_on_the_command_line_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "--nats-url", f"nats://bridge:{SECRET}@127.0.0.1:4222"]) == 2
    out, err = capsys.readouterr()
    assert "nats.servers[0]: credentials in a URL" in err and SECRET not in out + err


def test_redacted_keeps_everything_that_is_not_secret() -> None:
    cfg = parse_config(
        "machine: PC2\nnats: {servers: ['nats://10.0.0.5:4222'], user: bridge, password_env: PW}\n"
    )
    shown = redacted(cfg)
    assert shown["machine"] == "PC2" and shown["nats"]["servers"] == ["nats://10.0.0.5:4222"]
    assert shown["nats"]["password_env"] == "PW" and shown["nats"]["password"] is None


SECTIONS = st.sampled_from(["nats", "zmq", "stream", "spool", "flood", "admin", "extra"])
SECRET_KEYS = st.sampled_from(
    ["password", "token", "nkey_seed", "secret", "client_secret", "private_key", "seed", "apiKey"]
)
VALUES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=16).map(
    lambda s: "S3CR" + s
)


@settings(max_examples=200, deadline=None)
@given(
    SECTIONS,
    st.lists(st.sampled_from(["a", "b", "curve"]), max_size=2),
    SECRET_KEYS,
    VALUES | st.integers(1000, 10**9),
)
def test_a_secret_key_anywhere_is_refused_by_path(
    section: str, nesting: list[str], key: str, value: object
) -> None:
    doc: dict = {key: value}
    for level in reversed([section, *nesting]):
        doc = {level: doc}
    path = ".".join([section, *nesting, key])
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(doc), "<fuzz>")
    assert any(p.startswith(f"{path}: plaintext secret refused") for p in info.value.problems)
    assert str(value) not in str(info.value)
    doc["allow_plaintext_secrets"] = True
    problems: list[str] = []
    try:
        parse_config(yaml.safe_dump(doc), "<fuzz>")
    except ConfigError as exc:
        problems = list(exc.problems)
    assert not any("plaintext secret" in p for p in problems)

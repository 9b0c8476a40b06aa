"""Configuration: defaults, precedence, and failures that name the field."""

from __future__ import annotations

import pytest

from tamer.config import ConfigError, config_hash, load_config


def test_embedded_default_file_is_valid_and_local(monkeypatch):
    for name in ("TAMER_ROOT", "TAMER_PROFILE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    config = load_config()
    assert config.root == "./tamer-data" and config.profile == "synth"
    assert config.ray.address is None


def test_precedence_file_then_environment_then_flags(tmp_path, monkeypatch):
    override = tmp_path / "mine.yaml"
    override.write_text("root: /from/file\ningest:\n  shard_rows: 7\n")
    assert load_config(override).root == "/from/file"
    monkeypatch.setenv("TAMER_ROOT", "/from/env")
    monkeypatch.setenv("TAMER_PROFILE", "sd15")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    config = load_config(override)
    assert (config.root, config.profile, config.ingest.shard_rows, config.ray.address) == (
        "/from/env", "sd15", 7, "127.0.0.1:6379")
    assert load_config(override, root="/from/flag").root == "/from/flag"
    assert load_config(override, profile="tiny").profile == "tiny"


@pytest.mark.parametrize("text, field", [
    ("ingest:\n  shard_rowz: 3\n", "ingest.shard_rowz"),
    ("ingest:\n  shard_rows: -1\n", "ingest.shard_rows"),
    ("ingest:\n  executor: spark\n", "ingest.executor"),
    ("synth:\n  size: big\n", "synth.size"),
])
def test_invalid_values_fail_naming_the_field(tmp_path, text, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(bad)


def test_config_hash_changes_with_values_only():
    a, b = load_config(), load_config()
    assert config_hash(a.ingest) == config_hash(b.ingest)
    assert config_hash(a.ingest) != config_hash(load_config(**{"ingest.min_side": 5}).ingest)


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("ingest:\n  shard_rows: 3\n bad: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml, line 3, column 2: invalid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="does not exist or is not a file"):
        load_config(tmp_path)  # a folder


def test_root_must_not_be_a_regular_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^invalid configuration: root: .*file is a file"):
        load_config(root=str(tmp_path / "file"))
    assert load_config(root=str(tmp_path / "not-yet")).root.endswith("not-yet")  # created later
    assert load_config(root="s3://bucket/tamer").root == "s3://bucket/tamer"


def test_profile_must_name_a_known_profile_or_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match=r"profile: no profile 'nosuch' \(known: \['sd15', 'sdxl', 'synth', 'tiny', 'tiny-sdxl'\]"):
        load_config(profile="nosuch")
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\n")
    assert load_config(profile=str(mine)).profile == str(mine)


def test_model_recipe_fields_are_checked_one_line_each(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  model: {trainable: lora}\neval:\n  textual_inversion: {stepz: 1}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert "train.model" in str(caught.value) and "eval.textual_inversion" in str(caught.value)
    assert str(caught.value).count("\n") == 2  # one line per invalid field

"""TrainConfig: one definition driving TOML files, command-line overrides and validation."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from studio import config
from studio.config import ConfigError, Precision, TrainConfig


def test_defaults_are_valid_and_every_field_is_documented():
    assert config.validate(TrainConfig()) == []
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["label"] and len(f.metadata["help"]) > 10, f.name
        assert f.metadata["group"], f.name


def test_toml_round_trip(tmp_path):
    cfg = dataclasses.replace(TrainConfig(), rank=32, alpha=8.5, trigger_word="zxq",
                              mixed_precision=Precision.bf16, target_modules=("to_q", "to_v"))
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml(cfg))
    assert config.load(path) == cfg
    assert tomllib.loads(config.to_toml(cfg, commented=False))["rank"] == 32


def test_unknown_keys_and_bad_values_are_all_reported():
    with pytest.raises(ConfigError) as err:
        config.from_dict({"ranc": 4, "learning_rate": "fast", "gradient_checkpointing": "maybe"})
    fields = [p.field for p in err.value.problems]
    assert fields == ["ranc", "learning_rate", "gradient_checkpointing"]
    assert "did you mean 'rank'" in str(err.value)


def test_overrides_are_typed_by_the_field():
    cfg = config.parse_overrides(["rank=8", "alpha=4", "export_diffusers=yes",
                                  "target_modules=to_q, to_k", "learning_rate=3e-4",
                                  "mixed_precision=bf16"], TrainConfig())
    assert (cfg.rank, cfg.alpha, cfg.export_diffusers) == (8, 4.0, True)
    assert cfg.target_modules == ("to_q", "to_k") and cfg.learning_rate == 3e-4
    assert cfg.mixed_precision is Precision.bf16
    with pytest.raises(ConfigError, match="expected key=value"):
        config.parse_overrides(["rank"], TrainConfig())
    with pytest.raises(ConfigError, match="whole number"):
        config.parse_overrides(["rank=2.5"], TrainConfig())


def test_validate_checks_ranges_and_cross_field_rules():
    cfg = dataclasses.replace(TrainConfig(), rank=0, resolution=100, output_name="a/b",
                              learning_rate=5.0, target_modules=())
    fields = {p.field for p in config.validate(cfg)}
    assert fields == {"rank", "resolution", "output_name", "learning_rate", "target_modules"}


def test_newer_schema_is_refused():
    with pytest.raises(ConfigError, match="newer LoRA Studio"):
        config.from_dict({"schema": config.SCHEMA_VERSION + 1})


def test_files_with_the_old_checkpoint_keys_still_load(tmp_path):
    # Schema 1 called resume points "checkpoints"; its files load, and are written back new.
    old = tmp_path / "project.toml"
    old.write_text("schema = 1\nkeep_checkpoints = 7\ncheckpoint_every_minutes = 2.5\n")
    cfg = config.load(old)
    assert (cfg.keep_resume_points, cfg.resume_point_every_minutes) == (7, 2.5)
    assert cfg.schema == config.SCHEMA_VERSION == 2
    written = tomllib.loads(config.to_toml(cfg))
    assert written["keep_resume_points"] == 7 and "keep_checkpoints" not in written
    assert config.parse_overrides(["keep_checkpoints=4"], cfg).keep_resume_points == 4
    both = config.from_dict({"keep_checkpoints": 1, "keep_resume_points": 5})
    assert both.keep_resume_points == 5  # the current name wins
    assert "LoRA file" in config.FIELDS["save_every_n_steps"].metadata["label"]


def test_prodigy_takes_its_customary_learning_rate_of_one_through_the_cli(tmp_path):
    """learning_rate's range follows the optimizer, in config.validate: Prodigy's 1.0 passes the
    CLI, AdamW's ceiling of 0.1 still holds, and Prodigy has a ceiling of its own."""
    from conftest import make_project, run_cli

    project = make_project(tmp_path / "p", tmp_path / "no-model-here", n_images=3)
    prodigy = run_cli("train", str(project), "--set", "optimizer=prodigy",
                      "--set", "learning_rate=1.0")
    error = prodigy.events[-1]
    assert error["event"] == "error" and "learning_rate" not in error["message"], error
    assert error["field"] == "base_model"  # past the settings: it stops at the missing model
    for optimizer, rate, limit in [("adamw", "1.0", "at most 0.1"),
                                   ("prodigy", "50", "at most 10 with the prodigy optimizer")]:
        run = run_cli("train", str(project), "--set", f"optimizer={optimizer}",
                      "--set", f"learning_rate={rate}")
        assert run.returncode == 2 and limit in run.events[-1]["message"], run.events
    assert not (project / "runs").exists()

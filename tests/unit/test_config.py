"""Config: YAML in, --set overrides, every problem reported at once with its field name."""

from __future__ import annotations

import pytest
import yaml

from honed.config import TrainConfig, apply_overrides, auto_epochs, config_to_yaml, load_config
from honed.errors import ConfigError


def test_defaults_are_a_sensible_first_run():
    cfg = load_config(None)
    assert cfg.method == "lora" and cfg.lora.target_modules == "all-linear"
    assert (cfg.lora.r, cfg.lora.alpha) == (16, 32.0)
    assert cfg.lr is None  # honed's width rule, applied by resolve_config once the model is known
    with pytest.raises(RuntimeError, match="resolve_config"):
        cfg.resolved_lr()  # never a silent second default
    assert cfg.schedule == "cosine" and cfg.warmup_ratio == 0.03 and cfg.epochs == "auto"


def test_yaml_then_set_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.001\nlora:\n  r: 4\nepochs: 2\n")
    cfg = load_config(path, overrides=["lora.r=8", "packing=false", "lora.target_modules=[q_proj,v_proj]"], flags={"epochs": 5})
    assert cfg.lr == 0.001 and cfg.lora.r == 8 and cfg.packing is False and cfg.epochs == 5
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]


def test_every_problem_is_listed_at_once_with_its_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: -1\nlora:\n  r: 0\n  alfa: 3\nepochs: many\nmethod: magic\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    details = "\n".join(info.value.details)
    assert len(info.value.details) == 5
    for field in ("lr:", "lora.r:", "lora.alfa: unknown field", "epochs:", "method:"):
        assert field in details
    assert str(path) in info.value.message


def test_cross_field_problem_names_the_field():
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides=["max_length=8192", "micro_batch_tokens=1024"])
    assert info.value.details[0].startswith("micro_batch_tokens:")


def test_bad_set_syntax_and_missing_file():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, overrides=["lora.r"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/run.yaml")


def test_apply_overrides_does_not_change_its_input():
    base = {"lora": {"r": 16}}
    assert apply_overrides(base, ["lora.r=8"]) == {"lora": {"r": 8}}
    assert base == {"lora": {"r": 16}}


def test_saved_yaml_round_trips():
    cfg = load_config(None, overrides=["lora.r=8", "epochs=3", "lr=1e-4"])
    again = TrainConfig.model_validate(yaml.safe_load(config_to_yaml(cfg)))
    assert again == cfg


def test_auto_epochs_rule():
    assert auto_epochs(10) == 10  # tiny sets: at least ~100 examples seen, capped at 10 epochs
    assert auto_epochs(20) == 5
    assert auto_epochs(500) == 3  # the usual case
    assert auto_epochs(10_000) == 2  # large sets: about 25,000 examples seen
    assert auto_epochs(100_000) == 1


def test_adam_betas_out_of_range_are_a_config_error():
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides=["adam_betas=[0.9, 1.5]"])
    assert any(line.startswith("adam_betas:") and "[0, 1)" in line for line in info.value.details)
    assert load_config(None, overrides=["adam_betas=[0.8, 0.95]"]).adam_betas == (0.8, 0.95)

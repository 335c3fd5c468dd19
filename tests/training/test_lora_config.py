"""One training config: lora_adapter's Dagster config is the trainer's TrainConfig (less the input paths) plus
``fresh`` — every knob settable from Dagster, with the trainer's defaults and descriptions."""

import dataclasses

import pytest

from crawl2serve.assets.training.lora import FIXED, INPUT_PATHS, LoraConfig, lora_adapter
from crawl2serve.assets.training.trainer import TrainConfig
from crawl2serve.pipelines.jobs import EMBEDDED_RUN_CONFIG

KNOBS = [f for f in dataclasses.fields(TrainConfig) if f.name not in INPUT_PATHS and f.name not in FIXED]


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_every_trainer_knob_is_a_dagster_config_field_with_the_trainers_default():
    schema = lora_adapter.op.config_schema.config_type.fields
    assert {f.name for f in KNOBS} | {"fresh"} == set(schema) == set(LoraConfig.model_fields)
    defaults = LoraConfig()
    for f in KNOBS:
        assert getattr(defaults, f.name) == _default(f), f.name
        assert LoraConfig.model_fields[f.name].description == f.metadata["doc"] != "", f.name


def test_the_dagster_config_becomes_the_trainers_config_unchanged():
    set_all = {
        f.name: (not _default(f)) if isinstance(_default(f), bool) else _default(f)
        for f in KNOBS
        if f.name != "compile"
    }
    set_all.update(weight_decay=0.01, log_every=5, max_seq_len=32, compile=False, target_modules=["q_proj"])
    config = LoraConfig(**set_all, fresh=True)
    trainer = TrainConfig(**config.model_dump(exclude={"fresh"}), **dict.fromkeys(INPUT_PATHS, "/x"), **FIXED)
    assert {k: getattr(trainer, k) for k in set_all} == set_all


def test_a_wrong_knob_names_the_field():
    with pytest.raises(ValueError, match="learning_rate"):
        LoraConfig(learning_rate="fast")


def test_the_embedded_run_sets_only_known_knobs():
    embedded = EMBEDDED_RUN_CONFIG["ops"]["lora_adapter"]["config"]
    assert set(embedded) <= set(LoraConfig.model_fields)
    assert LoraConfig(**embedded).max_steps == embedded["max_steps"]

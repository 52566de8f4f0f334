import inspect

import pytest

from bertops import config as cfg
from cli.kubeflow import run_arguments
from cli.main import build_parser
from pipelines.training_pipeline import training_pipeline


def test_every_config_field_is_a_pipeline_parameter_with_the_same_default() -> None:
    params = inspect.signature(training_pipeline.pipeline_func).parameters
    defaults = cfg.PipelineConfig().to_arguments()
    assert set(defaults) <= set(params)
    for name, value in defaults.items():
        assert params[name].default == value, name
    assert set(params) - set(defaults) == {"git_commit", "trigger"}


def test_cli_flags_override_config() -> None:
    args = build_parser().parse_args(["run", "--learning-rate", "3e-5", "--max-steps", "7", "--model-name", "m"])
    config = cfg.from_namespace(args)
    assert config.train.learning_rate == 3e-5
    assert config.train.max_steps == 7
    assert config.registry.model_name == "m"
    assert config.data.data_path == cfg.DataConfig().data_path


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(KeyError, match="no_such"):
        cfg.PipelineConfig().replace(no_such=1)


def test_bad_flag_value_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "--max-steps", "many"])
    assert exc.value.code == 2


def test_submitted_runs_get_json_settings_decoded_and_only_what_was_given() -> None:
    args = build_parser().parse_args(
        [
            *("submit", "--host", "https://kfp.example.com", "--max-steps", "9"),
            *("--candidates", '[{"id": "a"}]', "--finetune-node-selector", '{"pool": "a100"}'),
            *("--finetune-tolerations", "[]", "--launcher", "TrainJob"),
        ]
    )
    assert run_arguments(args) == {
        "max_steps": 9,
        "candidates": [{"id": "a"}],
        "finetune_node_selector": {"pool": "a100"},
        "finetune_tolerations": [],
        "launcher": "TrainJob",
    }

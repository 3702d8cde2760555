"""One way to open an engine: ``EngineArgs`` (validated, turned into flags) and the checkpoint card."""

from __future__ import annotations

import argparse

import pytest

from research.cli import add_fields, from_args
from research.engines.args import EngineArgs
from research.engines.card import ModelArgs, default_protocol, default_template, resolve_template, write_card


def test_the_template_follows_the_checkpoint(tmp_path):
    assert default_template("agentrl/ReSearch-Qwen-7B-Instruct") == "instruct"
    assert default_template("agentrl/ReSearch-Qwen-32B") == "base"
    write_card(tmp_path, "instruct")
    assert default_template(tmp_path) == "instruct"
    assert resolve_template("auto", tmp_path) == "instruct"
    assert resolve_template("base", tmp_path) == "base"
    assert resolve_template("auto", None) == "base"


def test_the_protocol_follows_the_card_then_the_released_names(tmp_path):
    assert default_protocol("agentrl/ReSearch-Qwen-7B-Instruct") == "research"
    assert default_protocol("PeterJinGo/SearchR1-nq_hotpotqa_train-qwen2.5-7b-em-ppo") == "search-r1"
    assert default_protocol("agentrl/ReCall-Qwen-7B-Instruct") == "recall"
    # Search-R1 trained through the tokenizer's chat template, base checkpoints too.
    assert ModelArgs(model="PeterJinGo/SearchR1-nq_hotpotqa_train-qwen2.5-7b-em-ppo").prompt_template == "instruct"
    write_card(tmp_path, "base", "recall")
    assert default_protocol(tmp_path) == "recall" and ModelArgs(model=str(tmp_path)).prompt_template == "base"
    assert ModelArgs(model=str(tmp_path), protocol="search-r1").search_protocol == "search-r1"
    assert ModelArgs(protocol="auto").search_protocol == "research"
    (tmp_path / "research.json").write_text('{"template": "base", "protocol": "searchr1"}')
    with pytest.raises(ValueError, match=r"research\.json: unknown protocol 'searchr1'; choose one of research"):
        default_protocol(tmp_path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"engine": "upstream"}, "--engine upstream needs --upstream-url"),
        ({"max_model_len": 0}, "--max-model-len must be at least 1"),
        ({"gpu_memory_utilization": 1.5}, r"--gpu-memory-utilization must be in \(0, 1\]"),
        ({"cpu_kv_cache_gib": -1}, "--cpu-kv-cache-gib must be positive"),
        ({"upstream_resumes": -1}, "--upstream-resumes must be at least 0, got -1"),
    ],
)
def test_bad_engine_arguments_name_their_flag(values, message):
    with pytest.raises(ValueError, match=message):
        EngineArgs(**values)


def test_engine_flags_come_from_the_fields_and_back():
    parser = argparse.ArgumentParser()
    add_fields(parser, EngineArgs)
    helps = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    assert helps["tensor_parallel_size"] == "vLLM: GPUs per model (e.g. 4 or 8 for 32B)"
    assert all(helps.values())
    args = parser.parse_args(["--engine", "transformers", "--dtype", "float32", "--max-model-len", "2048"])
    parsed = from_args(EngineArgs, args)
    assert parsed == EngineArgs(engine="transformers", dtype="float32", max_model_len=2048)
    assert parsed.cli_flags() == ["--engine=transformers", "--dtype=float32", "--max-model-len=2048"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--engine", "sglang"])


def test_vllm_gets_eager_mode_only_without_cuda():
    args = EngineArgs(dtype="float32", max_model_len=2048)
    assert args.vllm_args(cuda=False) == {"dtype": "float32", "max_model_len": 2048, "enforce_eager": True}
    assert args.vllm_args(cuda=True) == {"dtype": "float32", "max_model_len": 2048}


def test_load_format_reaches_vllm_only_when_given():
    """``--load-format dummy``: random weights from config.json alone (the GPU acceptance script serves a 7B so)."""
    assert "load_format" not in EngineArgs().vllm_args(cuda=True)
    assert EngineArgs(load_format="dummy").vllm_args(cuda=True)["load_format"] == "dummy"

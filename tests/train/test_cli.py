"""``research-train`` end to end on CPU: dry-run plan, a killed run that resumes, the checkpoint served, curves."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from research.testbed.processes import free_port, launched
from research.train.cli import main as train_main
from research.train.config import TrainConfig
from tests.support.cli import run_main
from tests.support.orphans import kill_once_the_engine_runs
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION

TRAIN = [sys.executable, "-m", "research.train.cli"]


def flags(cfg: TrainConfig, **extra) -> list[str]:
    values = {
        "base": cfg.base, "template": cfg.template, "data": cfg.data, "index": cfg.index, "output-dir": cfg.output_dir,
        "prompts-per-step": 2, "num-generations": 2, "per-device-train-batch-size": 2, "max-completion-length": 256,
        "search-top-k": 2,
        "temperature": 0.1, "validation-size": 0, "learning-rate": 1e-4, "save-steps": 1, **extra,
    }  # fmt: skip
    return [arg for k, v in values.items() for arg in (f"--{k}", str(v))]


def test_dry_run_prints_the_32b_plan_without_downloading():
    out = run_main(train_main, ["--base", "qwen2.5-32b", "--dry-run"])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert '"lr_scheduler_type": "constant"' in text and '"beta": 0.001' in text and '"num_generations": 5' in text
    assert '"learning_rate"' not in text  # the paper's 1e-6 is TRL's default too
    assert "model: Qwen/Qwen2.5-32B" in text
    assert "256 prompts x 5 rollouts = 1280 per step over 64 GPUs (1 per GPU x 20 accumulation steps)" in text
    assert "Adam + fp32 master (sharded)" in text and "total" in text
    assert "colocated vLLM weights (bf16, a full copy)" in text and "--generation vllm-server" in text  # 61 GiB
    assert "accelerate launch --config_file" in text and "--num_machines 8 --num_processes 64" in text
    assert Path(text.split("--config_file ")[1].split()[0]).is_file()  # the shipped ZeRO-3 config


def test_bad_configuration_is_a_clear_error(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("learning_rate: 1e-6\nwarp_speed: 9\n")
    out = run_main(train_main, ["--config", str(bad), "--dry-run"])
    assert out.returncode == 2 and "Unknown arguments from config file: ['--warp_speed', '9']" in out.stderr
    out = run_main(train_main, ["--num-generations", "1", "--dry-run"])
    assert out.returncode == 2 and "num_generations must be at least 2" in out.stderr


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--temperature", "0"], "temperature must be positive, got 0.0"),
        (["--beta", "-1"], "beta must be at least 0, got -1.0"),
        (["--top-p", "0"], "top_p must be in (0, 1], got 0.0"),
        (["--num-train-epochs", "0"], "num_train_epochs must be positive, got 0.0"),
        (["--save-steps", "0"], "save_steps must be positive, got 0"),
        (["--per-device-train-batch-size", "0"], "per_device_train_batch_size must be positive, got 0"),
        (["--nodes", "0"], "nodes must be positive, got 0"),
        (["--max-steps", "0"], "max_steps must be positive, or -1"),
        (["--base", " "], "base must name a model"),
    ],
)
def test_every_bad_value_is_a_one_line_error_before_any_work(flag, message, tmp_path):
    """Each used to be accepted, or to fail 40 s in inside TRL; none may create the output folder."""
    out = tmp_path / "run"
    done = run_main(train_main, [*flag, "--output-dir", str(out)])
    assert done.returncode == 2 and done.stderr == f"research-train: error: {done.stderr.split('error: ')[1]}"
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1 and not out.exists()
    fixed = run_main(train_main, ["--output-dir", str(out), "--dry-run"])
    assert fixed.returncode == 0 and not out.exists()  # the corrected command plans, and still writes nothing


def test_a_bad_value_is_the_only_line_the_real_command_prints(tmp_path):
    """The table above runs in-process; as a console script, nothing else (an import's warning) may join the line."""
    out = tmp_path / "run"
    done = subprocess.run([*TRAIN, "--beta", "-1", "--output-dir", str(out)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == "research-train: error: beta must be at least 0, got -1.0\n"
    assert done.stdout == "" and not out.exists()


def test_a_killed_run_resumes_without_losing_or_repeating_steps_and_its_checkpoint_serves(
    train_config, tmp_path, caplog
):
    """Killed (kill -9) once its first checkpoint is saved, while it generates on a colocated vLLM: nothing it started
    outlives it. TRL runs that vLLM inside the trainer's process (``external_launcher``, on GPUs too), so what could
    outlive it is whatever a future TRL or vLLM starts, and the engine watchdog itself. Then resumed in-process,
    generating with transformers (no vLLM in the test process): the rollouts are sampled either way."""
    run = Path(train_config.output_dir)

    def saved() -> bool:
        return (run / "checkpoint-1" / "research.json").is_file()

    args = [*TRAIN, *flags(train_config, **{"max-steps": 2, "generation": "vllm"})]
    kill_once_the_engine_runs(args, tmp_path / "train.log", saved, {"VLLM_CPU_KVCACHE_SPACE": "1"})
    # What a kill during the next save leaves (with 7B weights a save takes minutes): the weights, no trainer state.
    newest = max(int(p.name.removeprefix("checkpoint-")) for p in run.glob("checkpoint-*"))
    torn = run / f"checkpoint-{newest + 1}"
    shutil.copytree(run / f"checkpoint-{newest}", torn, ignore=shutil.ignore_patterns("trainer_state.json"))
    caplog.set_level(logging.INFO, logger="research")
    done = run_main(train_main, flags(train_config, **{"max-steps": 2}))  # the resumed run in-process: no imports
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipping {torn.name}: it has no trainer_state.json" in caplog.text
    assert f"resuming from {run / f'checkpoint-{newest}'}" in caplog.text and (run / f"incomplete-{torn.name}").is_dir()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    tensorboard = EventAccumulator(str(run / "runs"))
    tensorboard.Reload()
    assert [e.step for e in tensorboard.Scalars("train/reward")] == [1, 2]  # the redone step once
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["searches"] > 0 and r["well_formed"] is not None and r["kl"] is not None for r in rows)
    assert json.loads((run / "research.json").read_text()) == {"template": "instruct", "protocol": "research"}
    assert (run / "runs").is_dir()  # TensorBoard event files

    plot = run_main(train_main, ["plot", str(run)])
    assert plot.returncode == 0 and Path(plot.stdout.strip()).read_bytes()[:4] == b"\x89PNG"

    port = free_port()
    args = [sys.executable, "-m", "research.server.cli", "--model", str(run / "checkpoint-2"),
            "--index", train_config.index, "--engine", "transformers", "--port", str(port),
            "--served-model-name", "trained"]  # fmt: skip
    with launched(args, f"http://127.0.0.1:{port}/health", run / "serve.log"):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        reply = client.chat.completions.create(
            model="trained", messages=[{"role": "user", "content": SCRIPT_QUESTION}], max_tokens=256, temperature=0
        )
        assert reply.choices[0].message.model_extra["answer"] == SCRIPT_ANSWER
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"] == "trained"

"""An engine's processes die with the process that started them, even under ``kill -9``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil

from research.retrieval import PassageIndex
from research.testbed.processes import free_port, launched
from tests.support.orphans import kill_once_the_engine_runs


def test_vllm_engine_processes_die_when_research_serve_is_killed(
    model_path: Path, script_index: PassageIndex, tmp_path
):
    port = free_port()
    args = [sys.executable, "-m", "research.server.cli", "--model", str(model_path), "--index", script_index.uri]
    args += ["--engine", "vllm", "--port", str(port), "--max-model-len", "2048", "--dtype", "float32"]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    with launched(args, f"http://127.0.0.1:{port}/health", tmp_path / "serve.log", timeout=600, env=env) as proc:
        engine = psutil.Process(proc.pid).children(recursive=True)
        started = {p.pid: " ".join(p.cmdline()[:4]) for p in engine}  # the watchdog among them
        assert any("EngineCore" in " ".join(p.cmdline()) or "VLLM" in p.name() for p in engine), engine
        os.kill(proc.pid, signal.SIGKILL)  # only the server: nothing in it runs to stop its engine
        proc.wait()
        _, alive = psutil.wait_procs(engine, timeout=60)
    assert not alive, f"orphaned engine processes: {[(p.pid, p.name()) for p in alive]} (of {started})"


def test_vllm_engine_processes_die_when_research_eval_is_killed(model_path: Path, script_index: PassageIndex, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": "fr", "question": "What is the capital of Freedonia?", "golden_answers": ["x"]}\n' * 1)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "research.evaluation.cli", "--out", str(out), "--dataset", f"script={questions}",
            "--model", str(model_path), "--index", script_index.uri, "--engine", "vllm", "--max-model-len", "2048",
            "--dtype", "float32", "--methods", "research,naive-generation", "--template", "instruct",
            "--max-tokens", "256"]  # fmt: skip

    def engine_up() -> bool:  # the first method's trace: the engine has generated
        return (out / "traces" / "script" / "research.jsonl").is_file()

    started = kill_once_the_engine_runs(args, tmp_path / "eval.log", engine_up, {"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert any("EngineCore" in command or "multiprocessing" in command for command in started.values()), started

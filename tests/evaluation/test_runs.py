"""``research-eval`` runs: resumable after a kill, reports, the served path and the judge.

The judge cannot exist here (it is a remote LLM), so a scripted judge stands in: a
real uvicorn server on loopback that speaks the OpenAI chat-completions API and
replies in the documented JSON shape, or, on purpose, not.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from research.evaluation.cli import main as eval_main
from research.evaluation.judge import Judge, parse_verdict
from research.protocol import get_protocol, normalize_answer
from tests.conftest import start_app, stop
from tests.support.cli import run_main
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION, scripted_model

QUESTIONS = [
    {"id": "fr", "question": SCRIPT_QUESTION, "golden_answers": [SCRIPT_ANSWER, "Marx Ville"]},
    {"id": "sy", "question": "What is the capital of Sylvania?", "golden_answers": ["Trentino Falls"]},
    {"id": "or", "question": "Who governs the harbor towns?", "golden_answers": ["the Orchard Council"]},
    {"id": "co", "question": "What does Copper Harbor ship?", "golden_answers": ["ore"]},
    {"id": "la", "question": "What does the Lantern Archive hold?", "golden_answers": ["maps"]},
]


class ScriptedJudge:
    """An OpenAI chat endpoint judging by normalised string match, with scripted misbehaviour.

    Questions containing ``MALFORMED`` always get prose instead of JSON; ``FLAKY`` ones
    get prose once, then a verdict; the very first request of all fails with a 500.
    """

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        self.requests.append(prompt)
        if len(self.requests) == 1:
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, status_code=500)
        question = re.search(r"Question: (.*)", prompt).group(1)
        golds = json.loads(re.search(r"Gold answers: (.*)", prompt).group(1))
        prediction = re.search(r"Predicted answer: (.*)", prompt).group(1)
        correct = normalize_answer(prediction) in {normalize_answer(g) for g in golds}
        verdict = json.dumps({"rationale": "string match", "judgement": "correct" if correct else "incorrect"})
        if "MALFORMED" in question or ("FLAKY" in question and sum(question in r for r in self.requests) == 1):
            verdict = "Looks right to me!"
        return JSONResponse({
            "id": "j", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}],
        })  # fmt: skip


@pytest.fixture
async def judge_server() -> Iterator[tuple[str, ScriptedJudge]]:
    judge = ScriptedJudge()
    uv, task, base = await start_app(judge.app)
    yield f"{base}/v1", judge
    await stop(uv, task)


def test_parse_verdict_rejects_anything_but_the_documented_json():
    assert parse_verdict('{"rationale": "x", "judgement": "Correct"}') is True
    assert parse_verdict('Sure! {"rationale": "x", "judgement": "incorrect"}') is False
    for bad in ["correct", '{"judgement": "maybe"}', '{"rationale": "x"}', "{not json}", ""]:
        with pytest.raises(ValueError):
            parse_verdict(bad)


async def test_judge_retries_errors_and_malformed_replies_and_caches_verdicts(judge_server, tmp_path):
    import openai

    url, scripted = judge_server
    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    judge = Judge(client, "judge", cache=tmp_path / "cache.jsonl", max_wait=0.01)
    assert await judge("Capital?", ["Marxville"], "marxville") is True  # after a 500
    assert await judge("FLAKY capital?", ["Marxville"], "Paris") is False  # after prose
    assert await judge("MALFORMED capital?", ["Marxville"], "Marxville") is None  # gave up
    asked = len(scripted.requests)
    again = Judge(client, "judge", cache=tmp_path / "cache.jsonl", max_wait=0.01)
    assert await again("Capital?", ["Marxville"], "marxville") is True
    assert await again("FLAKY capital?", ["Marxville"], "Paris") is False
    assert len(scripted.requests) == asked  # both verdicts came from the cache


def assert_summary_matches_traces(summary: dict, traces: Path) -> None:
    """Each method's summary is the mean of its traces, over every question once."""
    for method, cell in summary.items():
        rows = [json.loads(line) for line in (traces / f"{method}.jsonl").read_text().splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(q["id"] for q in QUESTIONS)
        for metric in ("em", "f1", "searches"):
            assert cell[metric] == pytest.approx(sum(r[metric] for r in rows) / len(rows), abs=1e-4), (method, metric)


def eval_args(out: Path, dataset: Path, model: Path, index: str, *extra: str) -> list[str]:
    return [
        "--out", str(out), "--dataset", f"script={dataset}", "--model", str(model), "--index", index,
        "--engine", "transformers", "--template", "instruct", "--max-tokens", "512", "--concurrency", "2",
        "--methods", "research,naive-generation,naive-rag,iter-retgen", *extra,
    ]  # fmt: skip


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


def test_a_killed_run_resumes_to_the_same_summary_as_an_uninterrupted_one(
    tmp_path, dataset, model_path, script_index, monkeypatch
):
    """The killed run is a real process; the others run in-process (the same ``main``, without 10 s of imports)."""
    monkeypatch.setenv("OPENAI_API_KEY", "")
    whole = tmp_path / "whole"
    done = run_main(eval_main, eval_args(whole, dataset, model_path, script_index.uri))
    assert done.returncode == 0, done.stderr
    summary = json.loads((whole / "summary.json").read_text())

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "research.evaluation.cli", *eval_args(killed, dataset, model_path,
                            script_index.uri)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    traces = killed / "traces" / "script" / "naive-rag.jsonl"  # the second method: research is done by then
    deadline = time.monotonic() + 300
    while not (traces.is_file() and traces.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with traces.open("a") as f:
        f.write('{"id": "cut-by-the-kill", "answ')  # what a kill mid-write leaves
    finished = {p: p.read_text().count("\n") for p in (killed / "traces").rglob("*.jsonl")}
    assert 0 < sum(finished.values()) < len(QUESTIONS) * 4

    resumed = run_main(eval_main, eval_args(killed, dataset, model_path, script_index.uri))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((killed / "summary.json").read_text()) == summary
    for path in (killed / "traces").rglob("*.jsonl"):
        ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
        assert sorted(ids) == sorted(q["id"] for q in QUESTIONS)  # nothing lost, nothing twice

    # Exact behaviour only where the scripted model was trained: its one question (fr).
    # On the other four, what it writes depends on the CPU that built it; the summary must
    # only agree with the traces.
    research = [json.loads(line) for line in (whole / "traces/script/research.jsonl").read_text().splitlines()]
    fr = next(r for r in research if r["id"] == "fr")
    assert fr["answer"] == SCRIPT_ANSWER and fr["em"] == 1.0 and fr["searches"] == 1 and fr["well_formed"] is True
    assert_summary_matches_traces(summary["script"], whole / "traces" / "script")
    assert summary["script"]["naive-generation"]["searches"] == 0.0
    assert summary["script"]["iter-retgen"]["searches"] == 3.0
    table = (whole / "table.md").read_text()
    research_em = f"{100 * summary['script']['research']['em']:.2f}"
    assert table.startswith("| Method | script EM | script LJ |") and f"| research | {research_em} | - |" in table
    assert (whole / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert f"| research | {research_em} |" in done.stdout

    other = run_main(eval_main, eval_args(killed, dataset, model_path, script_index.uri, "--search-top-k", "3"))
    assert other.returncode == 2 and "different settings (search_top_k)" in other.stderr


async def test_served_research_and_the_judge_fill_the_lj_column(tmp_path, dataset, live_transformers, judge_server):
    from research.cli import from_args
    from research.engines.args import EngineArgs
    from research.evaluation.cli import EvalConfig, evaluate, parser

    url, _ = judge_server
    args = parser().parse_args([
        "--out", str(tmp_path / "run"), "--dataset", f"script={dataset}", "--methods", "research",
        "--server-url", live_transformers.url, "--max-tokens", "512", "--judge-url", url, "--judge-model", "judge",
    ])  # fmt: skip
    summary = await evaluate(from_args(EvalConfig, args), from_args(EngineArgs, args))
    cell = summary["script"]["research"]
    assert cell["em"] == cell["lj"] and cell["judge_failures"] == 0  # the scripted judge matches strings
    assert_summary_matches_traces(summary["script"], tmp_path / "run" / "traces" / "script")
    rows = [json.loads(line) for line in (tmp_path / "run" / "traces" / "script" / "research.jsonl").open()]
    fr = next(r for r in rows if r["id"] == "fr")  # the one question the model was trained on
    assert fr["answer"] == SCRIPT_ANSWER and fr["searches"] == 1 and fr["em"] == 1.0


@pytest.mark.parametrize("protocol", ["search-r1", "recall"])
def test_research_runs_in_the_models_protocol(tmp_path, dataset, script_index, protocol):
    """Prompts, loop and answer extraction are the protocol's; the passages per search its default."""
    args = eval_args(tmp_path / "run", dataset, scripted_model(protocol=protocol), script_index.uri)
    args[args.index("--methods") + 1] = "research"
    done = run_main(eval_main, [*args, "--protocol", protocol])
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["protocol"] == protocol and config["search_top_k"] == get_protocol(protocol).default_k
    rows = [json.loads(line) for line in (tmp_path / "run" / "traces/script/research.jsonl").read_text().splitlines()]
    fr = next(r for r in rows if r["id"] == "fr")
    assert fr["answer"] == SCRIPT_ANSWER and fr["em"] == 1.0 and fr["searches"] == 1 and fr["well_formed"] is True


def test_a_start_that_cannot_load_its_index_leaves_no_run_folder(tmp_path, dataset, model_path, monkeypatch):
    """It used to write config.json first, so the corrected command was refused ("a run with different settings")."""
    monkeypatch.setenv("OPENAI_API_KEY", "")
    out = tmp_path / "run"
    args = eval_args(out, dataset, model_path, str(tmp_path / "no-such-index"), "--methods", "naive-generation")
    failed = run_main(eval_main, args)
    assert failed.returncode == 2 and "no passage index at" in failed.stderr.strip().splitlines()[-1]
    assert not out.exists()


async def test_a_second_identical_run_on_the_web_makes_no_provider_call(
    tmp_path, model_path, script_index, monkeypatch
):
    """``--web-search``: the first run asks the provider (Tavily's API, replayed: no provider can be reached from
    here), the second finds every query in the on-disk cache."""
    from research.cli import from_args
    from research.engines.args import EngineArgs
    from research.evaluation.cli import EvalConfig, evaluate, parser
    from tests.support.web_providers import KEY, Replay

    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TAVILY_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "")
    replay = Replay(script_index)
    uv, task, replay.base = await start_app(replay.app)
    dataset = tmp_path / "questions.jsonl"
    dataset.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS[:2]))
    summaries, calls = [], []
    for run in ("first", "second"):
        args = parser().parse_args([
            "--out", str(tmp_path / run), "--dataset", f"script={dataset}", "--model", str(model_path),
            "--web-search", "tavily", "--web-search-url", replay.url("tavily"), "--engine", "transformers",
            "--template", "instruct", "--max-tokens", "512", "--methods", "research,naive-rag",
        ])  # fmt: skip
        summaries.append(await evaluate(from_args(EvalConfig, args), from_args(EngineArgs, args)))
        calls.append(len(replay.calls))
    await stop(uv, task)
    assert calls[0] >= 3 and calls[1] == calls[0]  # research searched at least once a question, naive-rag once
    assert summaries[0] == summaries[1]
    fr = json.loads((tmp_path / "second" / "traces/script/research.jsonl").read_text().splitlines()[0])
    assert fr["id"] == "fr" and fr["answer"] == SCRIPT_ANSWER

"""Each protocol against its reference repository's own code, on generated cases; prints one table.

    python bench/protocol_fidelity.py --recall PATH/ReCall --search-r1 PATH/Search-R1 [--cases 300]
        [--record tests/protocol/reference_cases.json.gz]

PATH is a git checkout or mirror (``git -C PATH show COMMIT:file`` must work); nothing is
installed from it. The reference functions are cut out of their files at the pinned commits
(ReSearch: ReCall's ``re-search`` branch; ReCall aaf16b3; Search-R1 a14dc3a) by name with
``ast`` and run as they are: prompts, the text each one inserts after a turn, answer
extraction and reward. Only their HTTP calls are answered here (a stand-in ``requests`` that
serves the generated passages and runs ReCall's own sandbox function), and the tokenizer is
the vendored Qwen2.5 one. ``--record`` writes the cases with the reference's outputs for
``tests/protocol/test_reference_cases.py``, so CI checks them without the repositories.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import random
import re
import string
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import wraps
from pathlib import Path
from typing import Any, Union

from research.protocol import get_protocol
from research.testbed.models import load_tokenizer

COMMITS = {"research": "re-search", "recall": "aaf16b31c83702cdd3c7f7a0ad431efce7904b63"}
SEARCH_R1_COMMIT = "a14dc3a4ffc6fe88c1e95038d9738e21ba3f7a06"
BASE = {
    "__builtins__": __builtins__,
    "re": re,
    "json": json,
    "string": string,
    "random": random,
    "time": time,
    "Counter": Counter,
    "wraps": wraps,
    "List": list,
    "Dict": dict,
    "Any": Any,
    "Tuple": tuple,
    "Union": Union,
    "io": io,
    "contextlib": contextlib,
    "ThreadPoolExecutor": ThreadPoolExecutor,
    "as_completed": as_completed,
}


def cut(repo: Path, commit: str, path: str, names: set[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """Run the definitions called ``names`` (functions, classes, assignments) of ``path`` in ``namespace``."""
    source = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, text=True)
    source.check_returncode()
    keep = []
    for node in ast.walk(ast.parse(source.stdout)):
        named = getattr(node, "name", None) or next(
            (t.id for t in getattr(node, "targets", []) if hasattr(t, "id")), ""
        )
        if named in names and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Assign):
            keep.append(node)
    missing = names - {getattr(n, "name", None) or n.targets[0].id for n in keep}
    if missing:
        raise SystemExit(f"{path} at {commit} has no {', '.join(sorted(missing))}")
    exec(compile(ast.Module(keep, type_ignores=[]), f"{commit[:7]}:{path}", "exec"), namespace)
    return namespace


def quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a reference function with its debugging prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


class FakeRequests(types.ModuleType):
    """The ``requests`` the reference code posts to: passages for a query, and ReCall's sandbox run in-process."""

    class exceptions:
        Timeout = TimeoutError

    def __init__(self, corpus: dict[str, list[str]], sandbox: Any) -> None:
        super().__init__("requests")
        self.corpus, self.sandbox = corpus, sandbox
        self.one_at_a_time = threading.Lock()  # the sandbox swaps sys.stdout, which threads would tangle

    def post(self, url: str, json: dict[str, Any], timeout: float | None = None) -> Any:
        if url.endswith("/execute"):
            request = types.SimpleNamespace(env=json["env"], call=json["call"], timeout=5)
            with self.one_at_a_time:
                body = quiet(asyncio.run, self.sandbox(request))
        elif url.endswith("/batch_search"):  # ReSearch's retriever: top_n passages per query
            body = [[{"contents": c} for c in self.corpus[q][: json["top_n"]]] for q in json["query"]]
        elif url.endswith("/retrieve"):  # Search-R1's retrieval server
            body = {"result": [[{"document": {"contents": c}} for c in self.corpus[q]] for q in json["queries"]]}
        else:  # ReCall's /search: one query, top_n passages
            body = [{"contents": c} for c in self.corpus[json["query"]][: json["top_n"]]]
        return types.SimpleNamespace(status_code=200, json=lambda: body)


# --- generated cases ------------------------------------------------------------------------------

# fmt: off
TRICKY_QUESTIONS = [
    "  who wrote {hamlet}?  ", "what is 2+2", 'the "quoted"', "ends with a full-width mark\uff1f",
    "\u00a0nbsp around\u3000", "tab\tinside", "multi\nline question", "emoji \U0001f389 ok?",
    "<answer> not a tag </answer> inside", "trailing ? space ? ", "\u00e4 \u00f6 \u00fc \u00df", "", "?",
    "{prompt} and {question}", "\\boxed{x}",
]
WORDS = [
    "alpha", "beta", "gamma", "delta", "Paris", "the", "an", "a", "yes", "no", "noanswer", "1999", "river", "city",
    "{x}", "\\", "$", "\u00e9", "\u4e2d",
]
RESEARCH_FRAGMENTS = [
    "<think>", "</think>", " <search> ", " q ", "</search>", " <result>\nr\n</result>", "<answer>", "</answer>",
    "\\boxed{", "}", "\\boxed ", "$", " Paris ", "\n", "\\fbox{x}", "<result>", "</result>", " Assistant: ",
    "<|im_start|>assistant\n",
]
SEARCH_R1_FRAGMENTS = [
    "<think>", "</think>", "<search>", " query ", "</search>", "<answer>", " Paris ", "</answer>", "\n",
    "<information>", "</information>", "<search> a </search>", "<answer></answer>", "<answer>\nb\n</answer>", " x ",
    "<Answer>", "</answer >",
]
TOOL_CALLS = [
    '{"name": "wikipedia_search", "arguments": {"query": "QUERY"}}',
    '{"name": "wikipedia_search", "arguments": {"query": "QUERY", "top_n": 2}}',
    '{"name": "wikipedia_search", "arguments": {"query": ""}}', '{"name": "wikipedia_search"}',
    '{"name": "wikipedia_search", "arguments": {"q": "x"}}', '{"name": "calc", "arguments": {"x": 1}}',
    '{"arguments": {"query": "x"}}', '{"name": "wikipedia_search", "arguments": ["x"]}', "not json",
    '{"name": "wikipedia_search", "arguments": {"query": "QUERY", "top-n": 1}}', "[1, 2]",
    '{"name": "wikipedia_search", "arguments": {"class": "x"}}', '"just a string"',
]
RECALL_FRAGMENTS = [
    "<think>", "</think>", " text ", "<tool_call>", "</tool_call>", "\\boxed{", "}", "\\boxed ", "$", "\n",
    "<|im_end|>", "<|im_start|>assistant\n", "<|im_start|>user\n", f"<tool_call>\n{TOOL_CALLS[0]}\n</tool_call>",
    " Paris ", "\\fbox{x}",
]
# fmt: on


def phrase(rng: random.Random, lo: int = 1, hi: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def passages(rng: random.Random) -> list[str]:
    out = []
    for _ in range(rng.randint(0, 5)):
        title = rng.choice(['"Paris"', "Paris", '"A (b)"', "", "Title: x", '"中文"'])
        body = rng.choice([phrase(rng, 3, 12), "", phrase(rng) + "\n" + phrase(rng), " padded ", "line\n\nbreaks"])
        out.append(f"{title}\n{body}" if rng.random() < 0.9 else title)
    return out


def soup(rng: random.Random, fragments: list[str], n: int) -> str:
    return "".join(rng.choice(fragments) for _ in range(n))


def golds(rng: random.Random) -> list[str]:
    return [phrase(rng, 1, 3) for _ in range(rng.randint(1, 3))]


# --- the three protocols --------------------------------------------------------------------------


def research_cases(repo: Path, tok: Any, questions: list[str], n: int, rng: random.Random) -> list[dict[str, Any]]:
    ns = dict(BASE)
    cut(repo, "re-search", "src/verl/utils/dataset/template.py", {"re_search_template", "re_search_template_sys"}, ns)
    cut(
        repo,
        "re-search",
        "src/verl/utils/reward_score/re_search.py",
        {
            "validate_format",
            "extract_answer",
            "remove_boxed",
            "last_boxed_only_string",
            "normalize_answer",
            "get_f1_score",
            "compute_score",
        },
        ns,
    )
    rollout = cut(
        repo,
        "re-search",
        "src/verl/workers/rollout/vllm_rollout/vllm_rollout.py",
        {"retry", "batch_search", "extract_search_content"},
        dict(BASE),
    )
    frags = RESEARCH_FRAGMENTS
    cases = []
    for i in range(n):
        q = questions[i % len(questions)]
        template = "base" if i % 2 else "instruct"
        eos = "<|endoftext|>" if template == "base" else "<|im_end|>"
        found = passages(rng)
        ns_requests = FakeRequests({"q": found}, None)
        rollout["requests"] = ns_requests
        if template == "base":
            prompt = ns["re_search_template"].format(prompt=q)
        else:
            chat = [{"role": "system", "content": ns["re_search_template_sys"]}, {"role": "user", "content": q}]
            prompt = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        gold = golds(rng)
        answer = rng.choice([*gold, phrase(rng)])
        skeleton = (
            f"<think> {phrase(rng)} </think> <search> {phrase(rng)} </search> <result>\nx\n</result> "
            f"<think> t </think> <answer> The final answer is \\[ \\boxed{{{answer}}} \\] </answer>"
        )
        response = skeleton if rng.random() < 0.5 else soup(rng, frags, rng.randint(1, 14))
        response += eos if rng.random() < 0.7 else ""
        turn = soup(rng, frags, rng.randint(0, 6)) + " <search> " + phrase(rng) + " </search>"
        searcher = types.SimpleNamespace(config=types.SimpleNamespace(search_url=""))
        cases.append(
            case(q, prompt, found, turn, response, gold, template=template, eos=eos)
            | {
                "query": rollout["extract_search_content"](None, turn),
                "reply": f" <result>\n{rollout['batch_search'](searcher, ['q'])[0]}\n</result>",
                "reward": float(ns["compute_score"](types.SimpleNamespace(eos_token=eos), prompt + response, gold)[0]),
            }
        )
    return cases


def search_r1_cases(repo: Path, tok: Any, questions: list[str], n: int, rng: random.Random) -> list[dict[str, Any]]:
    data = cut(
        repo,
        SEARCH_R1_COMMIT,
        "scripts/data_process/nq_search.py",
        {"make_prefix", "make_map_fn"},
        dict(BASE, args=types.SimpleNamespace(template_type="base"), data_source="nq"),
    )
    em = cut(
        repo,
        SEARCH_R1_COMMIT,
        "verl/utils/reward_score/qa_em.py",
        {"normalize_answer", "em_check", "extract_solution", "compute_score_em"},
        dict(BASE),
    )
    agent = cut(
        repo,
        SEARCH_R1_COMMIT,
        "search_r1/llm_agent/generation.py",
        {"execute_predictions", "postprocess_predictions", "batch_search", "_batch_search", "_passages2string"},
        dict(BASE),
    )
    frags = SEARCH_R1_FRAGMENTS
    process = data["make_map_fn"]("train")
    questions = [q for q in questions if q.strip()]  # the reference fails on a blank question (IndexError)
    cases = []
    for i in range(n):
        q = questions[i % len(questions)]
        template = "instruct" if i % 2 else "base"
        row = process({"question": q, "golden_answers": ["x"]}, i)["prompt"][0]["content"]
        prompt = (
            tok.apply_chat_template([{"role": "user", "content": row}], add_generation_prompt=True, tokenize=False)
            if template == "instruct"
            else row
        )
        found = passages(rng)
        turn = soup(rng, frags, rng.randint(0, 8))
        if rng.random() < 0.5:
            turn += rng.choice(["<search>" + phrase(rng) + "</search>", "<answer> " + phrase(rng) + " </answer>"])
        action = re.search(r"<(search|answer)>(.*?)</\1>", turn, re.DOTALL)
        query = action.group(2).strip() if action else ""
        manager = types.SimpleNamespace(config=types.SimpleNamespace(topk=3, search_url="/retrieve"))
        agent["requests"] = FakeRequests({query: found}, None)
        for name in ("postprocess_predictions", "batch_search", "_batch_search", "_passages2string"):
            setattr(manager, name, types.MethodType(agent[name], manager))
        next_obs, dones, _, _ = agent["execute_predictions"](manager, [turn], "<|endoftext|>", [True])
        gold = golds(rng)
        response = soup(rng, frags, rng.randint(0, 12))
        if rng.random() < 0.4:
            response += f"<answer> {rng.choice([*gold, phrase(rng)])} </answer>"
        # The reference reads prompt + response; where the response has no answer of its own, the prompt's counts.
        pairs = [len(re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)) for text in (prompt + response, prompt)]
        own = pairs[0] > pairs[1]
        cases.append(
            case(q, prompt, found, turn, response, gold, template=template)
            | {
                "done": bool(dones[0]),
                "reply": next_obs[0],
                "answer": em["extract_solution"](prompt + response) if own else None,
                "reward": float(quiet(em["compute_score_em"], prompt + response, {"target": gold})),
            }
        )
    return cases


def recall_cases(repo: Path, tok: Any, questions: list[str], n: int, rng: random.Random) -> list[dict[str, Any]]:
    commit = COMMITS["recall"]
    infer = cut(repo, commit, "src/re_call/inference/re_call.py", {"retry", "ReCall"}, dict(BASE))
    rollout = cut(
        repo,
        commit,
        "src/verl/workers/rollout/vllm_rollout/vllm_rollout_spmd.py",
        {"format_tool_call", "batch_execute"},
        dict(BASE),
    )
    routes = types.SimpleNamespace(post=lambda path: lambda fn: fn)  # FastAPI's @app.post, the function itself
    sandbox = cut(repo, commit, "scripts/serving/sandbox.py", {"execute_code"}, dict(BASE, app=routes, CodeRequest=Any))
    sandbox = sandbox["execute_code"]
    prep = cut(
        repo, commit, "data/prepare_musique_recall.py", {"wikipedia_search_env", "wikipedia_search_schemas"}, dict(BASE)
    )
    score = cut(
        repo,
        commit,
        "src/verl/utils/reward_score/re_call.py",
        {
            "remove_boxed",
            "last_boxed_only_string",
            "normalize_answer",
            "get_f1_score",
            "validate_template_format",
            "compute_score_with_format",
        },
        dict(BASE),
    )
    pipeline = cut(
        repo, commit, "src/flashrag/pipeline/active_pipeline.py", {"extract_last_assistant_response"}, dict(BASE)
    )["extract_last_assistant_response"]
    recall = infer["ReCall"]("model", "executor")
    env = prep["wikipedia_search_env"].replace("<search-url-placeholder>", "")
    schema = json.loads(prep["wikipedia_search_schemas"])
    calls = TOOL_CALLS
    frags = RECALL_FRAGMENTS
    cases = []
    for i in range(n):
        q = questions[i % len(questions)]
        tools = [schema[0]] + [
            {
                "type": "function",
                "function": {
                    "name": f"t{j}",
                    "description": "é ü {x}",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
            for j in range(rng.randint(0, 2))
        ]
        prompt = recall.init_prompt(json.dumps(tools, indent=4), q)
        query = phrase(rng)
        found = passages(rng)
        turn = f"<think> {phrase(rng)} </think>"
        for _ in range(rng.randint(0, 3)):
            turn += "\n<tool_call>\n" + rng.choice(calls).replace("QUERY", query) + "\n</tool_call>"
        if rng.random() < 0.15:
            turn += rng.choice(["<tool_call>", "</tool_call>", "</tool_call><tool_call>"])
        rollout["requests"] = FakeRequests({query: found}, sandbox)
        sys.modules["requests"] = rollout["requests"]  # the sandbox's env code imports it
        tool_calls = recall.extract_tool_calls(turn)
        results = (
            rollout["batch_execute"](
                types.SimpleNamespace(
                    config=types.SimpleNamespace(sandbox_url=""),
                    format_tool_call=lambda c: rollout["format_tool_call"](None, c),
                ),
                [env],
                [tool_calls],
            )[0]
            if tool_calls
            else []
        )
        gold = golds(rng)
        box = rng.choice([f"\\boxed{{{g}}}" for g in gold] + ["\\boxed{x}", "\\boxed y $", "none"])
        response = (
            f" {phrase(rng)} </think>\n<tool_call>\n{calls[0].replace('QUERY', query)}\n</tool_call><|im_end|>"
            f"\n<|im_start|>user\n<tool_response>x\ny\n</tool_response>\n<|im_end|>\n<|im_start|>assistant\n<think>"
            f" t </think> The answer is \\[ {box} \\]."
        )
        if rng.random() < 0.5:
            response = soup(rng, frags, rng.randint(0, 14))
        response += "<|im_end|>" if rng.random() < 0.7 else ""
        part = pipeline(None, prompt + response)
        try:
            answer = score["remove_boxed"](score["last_boxed_only_string"](part)) if part else ""
        except Exception:
            answer = ""
        eos = types.SimpleNamespace(eos_token="<|im_end|>")
        cases.append(
            case(q, prompt, found, turn, response, gold, tools=tools, query=query)
            | {
                "tool_calls": tool_calls,
                "reply": recall.cat_tool_results("", tool_calls, results) if tool_calls else None,
                "answer": answer,
                "reward": float(score["compute_score_with_format"](eos, prompt + response, gold)[0]),
            }
        )
    return cases


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def case(question: str, prompt: str, passages: list[str], turn: str, response: str, gold: list[str], **more: Any):
    """A case's inputs (the prompt by its hash: it is long, and rendered again from the question)."""
    return {"question": question, "passages": passages, "turn": turn, "response": response, "gold": gold,
            "prompt_sha256": sha(prompt), **more}  # fmt: skip


# --- ours against the recorded reference -------------------------------------------------------


def check(name: str, case: dict[str, Any], tok: Any) -> list[str]:
    """The fields where our protocol ``name`` disagrees with the reference's outputs in ``case``."""
    p = get_protocol(name)
    bad = []
    template = case.get("template", "instruct")
    prompt = p.render_prompt(case["question"], template, tok, tools=case.get("tools") if name == "recall" else None)
    if sha(prompt) != case["prompt_sha256"]:
        bad.append("prompt")
    if name == "research":
        step = p.next_step(case["turn"], "stop")
        if step.calls[0].query != case["query"]:
            bad.append("query")
        if p.reply(step, [case["passages"]]) != case["reply"]:
            bad.append("reply")
        eos = case["eos"]
    elif name == "search-r1":
        step = p.next_step(case["turn"], "stop")
        if step.done != case["done"] or (not step.done and p.reply(step, [case["passages"]]) != case["reply"]):
            bad.append("reply")
        if p.extract_answer(case["response"]) != case["answer"]:
            bad.append("answer")
        eos = "<|im_end|>"
    else:
        step = p.next_step(case["turn"], "eos")
        if [c.text for c in step.calls] != case["tool_calls"]:
            bad.append("tool_calls")
        found = [case["passages"][: c.k] if c.query else None for c in step.calls]
        if (p.reply(step, found) if step.calls else None) != case["reply"]:
            bad.append("reply")
        if p.extract_answer(case["response"]) != case["answer"]:
            bad.append("answer")
        eos = "<|im_end|>"
    if p.reward(case["response"], case["gold"], eos_token=eos) != case["reward"]:
        bad.append("reward")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recall", type=Path, required=True, help="Agent-RL/ReCall (its re-search branch included)")
    parser.add_argument("--search-r1", type=Path, required=True, help="PeterGriffinJin/Search-R1")
    parser.add_argument("--cases", type=int, default=300, help="cases per protocol (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", type=Path, help="write the cases and the reference's outputs here (.json.gz)")
    args = parser.parse_args()
    tok = load_tokenizer()
    from research.questions.datasets import bundled

    questions = [e.question for e in bundled("bamboogle", limit=None, seed=0)] + TRICKY_QUESTIONS
    rng = random.Random(args.seed)
    made = {
        "research": research_cases(args.recall, tok, questions, args.cases, rng),
        "search-r1": search_r1_cases(args.search_r1, tok, questions, args.cases, rng),
        "recall": recall_cases(args.recall, tok, questions, args.cases, rng),
    }
    print(f"{'protocol':<10} {'cases':>6} {'differ':>6}  fields that differ")
    for name, cases in made.items():
        differ = Counter(field for case in cases for field in check(name, case, tok))
        print(f"{name:<10} {len(cases):>6} {sum(bool(check(name, c, tok)) for c in cases):>6}  {dict(differ) or '-'}")
    if args.record:
        record = {"commits": {**COMMITS, "search-r1": SEARCH_R1_COMMIT}, "seed": args.seed, "cases": made}
        args.record.write_bytes(gzip.compress(json.dumps(record, ensure_ascii=False, indent=0).encode(), mtime=0))
        print(f"recorded {sum(map(len, made.values()))} cases in {args.record}")


if __name__ == "__main__":
    main()

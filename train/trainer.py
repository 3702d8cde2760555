"""Assemble TRL's ``GRPOTrainer`` for the ReSearch recipe and run it (resumably).

The configuration is TRL's ``GRPOConfig`` itself (:class:`TrainConfig`); generation is the shared
search loop (:class:`~research.train.rollout.SearchRollouts`), the reward the shared
reward, and the mask the loop's: retrieved tokens are out of the loss and the KL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from research.engines.card import resolve_protocol, resolve_template, write_card
from research.engines.orphans import watch_children
from research.protocol import ProtocolName, TemplateName
from research.questions import validation_examples
from research.train.config import TrainConfig
from research.train.curves import StepLog, TensorBoardLog
from research.train.data import to_dataset, train_examples
from research.train.rollout import SearchRollouts, research_reward

log = logging.getLogger("research.train")


def load_onto_indexed_cpus() -> None:
    """Let ``torch.load`` map a checkpoint onto ``cpu:0`` (or ``cpu:N``), not only ``cpu``.

    In a multi-process CPU run (``accelerate launch``, gloo) accelerate gives each process the
    device ``cpu:0``, and transformers resumes the optimizer with that as ``map_location``, which
    torch's own CPU deserializer refuses ("don't know how to restore data location"); a
    deserializer registered through torch's public ``register_package`` accepts it.
    """
    import torch

    def cpu_indexed(obj: Any, location: str) -> Any:
        return obj if re.fullmatch(r"cpu:\d+", location) else None

    torch.serialization.register_package(30, lambda obj: None, cpu_indexed)


def keep_vllm_cpu_weights_loadable() -> None:
    """Make a CPU vLLM run its linear layers on their own weights, so TRL can push the policy in.

    vLLM's CPU build repacks each linear weight for oneDNN or AMX kernels and drops the
    parameter whose loader TRL's weight sync calls ("'Parameter' object has no attribute
    'weight_loader'"). On GPUs the parameters stay. Only colocated generation on CPU
    (the tests, the toy-world GRPO) takes this path; it costs vLLM its packed kernels.
    """
    import torch
    from vllm.model_executor.layers import utils

    def plain(layer: Any, remove_weight: bool) -> None:
        layer.cpu_linear = torch.nn.functional.linear

    utils.dispatch_cpu_unquantized_gemm = plain


def build_trainer(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> tuple[Any, SearchRollouts]:
    """TRL's ``GRPOTrainer`` for ``cfg`` (with ``callbacks``, transformers ``TrainerCallback``s, beside ours) and the
    rollouts it generates with (close them when done)."""
    import torch
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    protocol = resolve_protocol(cfg.protocol, cfg.model_id)
    template = resolve_template(cfg.template, cfg.model_id, protocol)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_id)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if cfg.use_vllm and cfg.vllm_mode == "colocate":
        watch_children()  # TRL's vLLM may run its engine core as a child process: it must not outlive us
        if not torch.cuda.is_available():
            keep_vllm_cpu_weights_loadable()
    train_set = to_dataset(train_examples(cfg.data), tokenizer, template, cfg.max_prompt_tokens, protocol)
    eval_set = None
    if cfg.validation_size:
        eval_set = to_dataset(
            validation_examples(cfg.validation_size, cfg.seed), tokenizer, template, cfg.max_prompt_tokens, protocol
        )
    peft_config = None
    if cfg.lora_rank:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, target_modules="all-linear")
    rollouts = SearchRollouts(
        cfg.retriever_args().open_retriever(),
        template=template,
        protocol=protocol,
        k=cfg.search_top_k,
        max_response_tokens=cfg.max_completion_length,
    )
    (out / "train_config.json").write_text(cfg.to_json_string())
    write_card(out, template, protocol)
    trainer = GRPOTrainer(
        model=cfg.model_id,
        reward_funcs=research_reward,
        args=cfg,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        rollout_func=rollouts,
        peft_config=peft_config,
        callbacks=[StepLog(out / "metrics.jsonl"), TensorBoardLog(), CardOnSave(template, protocol), *callbacks],
    )
    return trainer, rollouts


def train(cfg: TrainConfig, *, resume: bool = True, callbacks: Sequence[Any] = ()) -> Path:
    """Run GRPO, resuming from the last whole checkpoint in ``cfg.output``; returns the servable output folder."""
    from accelerate import PartialState

    out = Path(cfg.output_dir)
    with PartialState().main_process_first():  # the main process sets incomplete checkpoints aside first
        last = resumable_checkpoint(out) if resume else None
    if last and PartialState().num_processes > 1 and PartialState().device.type == "cpu":
        load_onto_indexed_cpus()
    trainer, rollouts = build_trainer(cfg, callbacks)
    try:
        if last:
            log.info("resuming from %s", last)
        trainer.train(resume_from_checkpoint=last)
        trainer.save_model(str(out))
        write_card(out, rollouts.template, rollouts.protocol.name)
    finally:
        rollouts.close()
    return out


CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def resumable_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint in ``out`` that was written whole, or None.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint without it (or with it
    cut short) was still being written when its run died — likely with 7B/32B weights and
    optimizer state, whose save takes minutes. Each such folder is moved aside to
    ``incomplete-checkpoint-N`` (which resume and rotation ignore), with a line saying why.
    """
    if not out.is_dir():
        return None
    found = sorted((int(m[1]), p) for p in out.iterdir() if p.is_dir() and (m := CHECKPOINT.fullmatch(p.name)))
    for step, folder in reversed(found):
        if (problem := _incomplete(folder, step)) is None:
            return folder
        aside = folder.with_name(f"incomplete-{folder.name}")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        log.warning("skipping %s: %s; moved it to %s", folder.name, problem, aside.name)
    return None


def _incomplete(folder: Path, step: int) -> str | None:
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "it has no trainer_state.json (its save was interrupted)"
    try:
        saved = json.loads(state.read_text())["global_step"]
    except (ValueError, KeyError):
        return "its trainer_state.json is cut short (its save was interrupted)"
    return None if saved == step else f"its trainer_state.json is for step {saved}"


class CardOnSave(TrainerCallback):
    """Writes ``research.json`` into every checkpoint so each one is servable as is."""

    def __init__(self, template: TemplateName, protocol: ProtocolName) -> None:
        self.template, self.protocol = template, protocol

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            write_card(folder, self.template, self.protocol)

"""`huatuo train`: one-stage adaptation on transformers' Trainer (accelerate underneath).

Run it plainly for one device, or through `accelerate launch` (optionally with the DeepSpeed
ZeRO config in configs/) for many GPUs and nodes. The training order comes from priority
sampling and is kept: the Trainer samples sequentially, it never shuffles.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.training.config import TINY_RANDOM, TrainConfig
from adapters.training.dataset import (
    PackedDataset,
    collate,
    corpus_text,
    load_or_prepare,
    read_sources,
)
from adapters.training.plots import plot_loss, read_loss_log

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    export_dir: Path | None
    global_step: int
    metrics: dict


def _callbacks(output_dir: Path, tokens_per_step: int, real_fraction: float):
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        """Appends every logged loss to loss_log.jsonl (survives resumes)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                entry = {"step": state.global_step, "loss": logs["loss"],
                         "learning_rate": logs.get("learning_rate"),
                         "epoch": logs.get("epoch")}
                with open(output_dir / "loss_log.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")

    class Throughput(TrainerCallback):
        """Training tokens/s over the optimizer steps this process ran."""

        def __init__(self) -> None:
            self.metrics: dict = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step, self.start = state.global_step, time.perf_counter()
            self.start_cpu = time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            seconds = time.perf_counter() - self.start
            # CPU seconds of this process (all threads): stable on a shared, noisy machine.
            cpu_seconds = time.process_time() - self.start_cpu
            steps = state.global_step - self.start_step
            tokens = steps * tokens_per_step
            self.metrics = {
                "steps": steps, "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu_seconds, 2),
                "tokens_per_cpu_s": round(tokens / cpu_seconds, 1) if cpu_seconds else 0.0,
                "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0,
                "non_padding_tokens_per_s": round(tokens * real_fraction / seconds, 1)
                if seconds else 0.0,
            }

    return LossLog(), Throughput()


class BaseModelError(ValueError):
    """The base checkpoint is missing or not in the Llama layout this trainer exports."""


def check_llama_checkpoint(path: Path) -> None:
    config_path = path / "config.json"
    if not config_path.exists():
        raise BaseModelError(f"model.path: {path} has no config.json (a Llama-layout checkpoint "
                             "directory, or 'tiny-random')")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != "llama":
        raise BaseModelError(
            f"model.path: {path} is a {model_type!r} checkpoint; train on its Llama-layout "
            f"conversion (huatuo convert --input {path} --output <dir>), which is what the "
            "server loads and what the export writes")
    if not (path / "tokenizer.json").exists():
        raise BaseModelError(f"model.path: {path} has no tokenizer.json (fast tokenizer); "
                             "`huatuo convert` writes one")


def base_model(config: TrainConfig, output_dir: Path, is_main: bool) -> Path:
    if config.model.path != TINY_RANDOM:
        check_llama_checkpoint(Path(config.model.path))
        return Path(config.model.path)
    base = output_dir / "base-model"
    # Built once per run directory, so a resumed run continues from the same base.
    if is_main and not (base / "config.json").exists():
        from huatuogpt2.demo_checkpoint import build_tiny_llama

        # Its tokenizer learns the training text, so the tiny vocabulary fits the data.
        corpus = corpus_text(read_sources(config.data))
        build_tiny_llama(base, hidden_size=config.model.tiny_hidden_size,
                         num_layers=config.model.tiny_layers, num_heads=config.model.tiny_heads,
                         num_kv_heads=config.model.tiny_heads, seed=config.training.seed,
                         vocab_size=config.model.tiny_vocab_size, corpus=corpus,
                         max_position_embeddings=max(4096, config.data.max_seq_len))
    return base


def _resume_path(config: TrainConfig, output_dir: Path) -> str | None:
    resume = config.training.resume
    if not resume:
        return None
    if resume == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(output_dir)) if output_dir.exists() else None
        if last is None:
            logger.warning("resume=latest: no checkpoint in %s, starting fresh", output_dir)
        return last
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"training.resume: no checkpoint directory {resume}")
    return resume


def train(config: TrainConfig, extra_callbacks: Sequence = (), export: bool = True
          ) -> TrainResult:
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from transformers.utils import logging as transformers_logging

    # Progress bars only on a terminal: in a log they are hundreds of \r-joined fragments
    # (without them the Trainer prints one line of loss per logging step instead).
    on_terminal = sys.stderr.isatty()
    if not on_terminal:
        transformers_logging.disable_progress_bar()
    t = config.training
    output_dir = Path(t.output_dir)
    bf16 = config.model.dtype == "bf16"
    # TrainingArguments first: with DeepSpeed ZeRO-3 it makes from_pretrained load sharded.
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of all steps
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit or None,
        bf16=bf16,
        gradient_checkpointing=config.model.gradient_checkpointing,
        train_sampling_strategy="sequential",  # the priority-sampling order IS the order
        dataloader_num_workers=t.dataloader_workers,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # every parameter takes part in every step
        report_to="none",
        seed=t.seed,
        deepspeed=t.deepspeed or None,
        use_cpu=t.use_cpu,
        disable_tqdm=not on_terminal,
    )
    state = PartialState()
    world = args.world_size
    rows_per_step = t.per_device_batch_size * t.gradient_accumulation_steps * world

    output_dir.mkdir(parents=True, exist_ok=True)
    # The main process builds (tiny base) and packs first; the others then load its cache.
    with state.main_process_first():
        base_dir = base_model(config, output_dir, state.is_main_process)
        tokenizer = AutoTokenizer.from_pretrained(base_dir, use_fast=True)
        data = load_or_prepare(config.data, tokenizer, base_dir, rows_per_step, output_dir,
                               state.is_main_process)
    if state.is_main_process:
        (output_dir / "train_config.json").write_text(
            json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")

    load_dtype = torch.bfloat16 if (bf16 and config.lora.enabled) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=load_dtype)
    model.config.use_cache = False
    if config.lora.enabled:
        from peft import LoraConfig, get_peft_model

        if config.model.gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(
            r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules, task_type="CAUSAL_LM"))
        if state.is_main_process:
            model.print_trainable_parameters()

    loss_log, throughput = _callbacks(output_dir, rows_per_step * config.data.max_seq_len,
                                      data.rows.efficiency)
    trainer = Trainer(model=model, args=args, train_dataset=PackedDataset(data.rows),
                      data_collator=collate, callbacks=[loss_log, throughput, *extra_callbacks])
    resume = _resume_path(config, output_dir)
    if resume:
        logger.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)

    metrics = dict(throughput.metrics)
    metrics.update(global_step=trainer.state.global_step,
                   packing_efficiency=data.summary["packing_efficiency"])
    export_dir = None
    if state.is_main_process:
        entries = read_loss_log(output_dir / "loss_log.jsonl")
        if entries:
            plot_loss(entries, output_dir / "loss_curve.png")
        (output_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"trained {metrics.get('steps', 0)} steps in {metrics.get('seconds', 0)} s: "
              f"{metrics.get('tokens_per_s', 0)} tokens/s "
              f"({metrics.get('non_padding_tokens_per_s', 0)} non-padding tokens/s)")
    if export and not _stopped_early(trainer):
        export_dir = _export(config, trainer, base_dir, output_dir, data.summary, metrics,
                             state)
    return TrainResult(output_dir, export_dir, trainer.state.global_step, metrics)


def _stopped_early(trainer) -> bool:
    return trainer.state.global_step < trainer.state.max_steps


def _export(config: TrainConfig, trainer, base_dir: Path, output_dir: Path, summary: dict,
            metrics: dict, state) -> Path:
    import shutil

    from adapters.training.export import export_full, export_lora

    trained = output_dir / "trained"
    trainer.save_model(str(trained))  # gathers ZeRO-3 shards; all processes take part
    out = config.export_dir
    if state.is_main_process:
        dtype = config.export.dtype or config.model.dtype
        info = {"base_model": str(base_dir), "lora": config.lora.enabled, "data": summary,
                "metrics": metrics}
        if config.lora.enabled:
            export_lora(base_dir, trained, base_dir, out, dtype, config.export.max_new_tokens,
                        config.lora.save_adapter, info)
        else:
            export_full(trained, base_dir, out, dtype, config.export.max_new_tokens, info)
        shutil.rmtree(trained, ignore_errors=True)
        print(f"servable checkpoint: {out}  (huatuo serve --model {out})")
    state.wait_for_everyone()
    return out

"""The embedded demo checkpoint: a tiny random Llama-layout model and a small tokenizer.

`huatuo serve` with no `--model` builds it once into the cache directory. Its answers are noise:
it exists to try the API (and it is the base the bundled training sample turns into a model that
answers with learned text). The tests build their checkpoints with the same function.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from huatuogpt2.checkpoint_metadata import (
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    PAD_TOKEN_ID,
    add_chat_template,
    write_generation_config,
)
from huatuogpt2.staging import build_atomically

logger = logging.getLogger(__name__)

DEMO_VERSION = "v1"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2: pad/unk, bos, eos as in HuatuoGPT2

# A small bilingual corpus so the tokenizer has useful merges for both languages.
_CORPUS = [
    "<问>：我最近总是头痛，应该怎么办？\n<答>：头痛的原因很多，建议先保证充足睡眠，规律饮食，"
    "如果持续不缓解或伴有呕吐、视物模糊，请及时就医。",
    "<问>：高血压患者饮食需要注意什么？\n<答>：减少盐的摄入，多吃蔬菜水果，控制体重，戒烟限酒，"
    "按医嘱规律服药并监测血压。",
    "<问>：发烧三十八度五要吃退烧药吗？\n<答>：可以在医生或药师指导下服用对乙酰氨基酚或布洛芬，"
    "多喝水，注意休息；高热不退请就医。",
    "<问>：What should I do about a persistent cough?\n<答>：A cough lasting more than three "
    "weeks should be checked by a doctor. Drink fluids, rest, and avoid smoke.",
    "<问>：How much water should an adult drink per day?\n<答>：Most adults need about 1.5 to 2 "
    "litres a day, more in hot weather or during exercise.",
    "<问>：糖尿病的早期症状有哪些？\n<答>：常见的有多饮、多尿、多食和体重下降，也可能没有明显症状，"
    "建议定期检查血糖。",
    "Patients with chest pain, shortness of breath or sudden weakness need emergency care.",
    "患者应遵医嘱用药，不要自行增减剂量。如有过敏史，请告知医生。 0123456789 %.,;:!?()",
]


def build_tokenizer(directory: Path, vocab_size: int = 1024,
                    corpus: Sequence[str] | None = None) -> int:
    """Train a byte-level BPE tokenizer (no chat template, no BOS) and save it; returns its size.

    `corpus` (e.g. the training data's text) is added to the built-in one, so a trained demo
    model's tokenizer has merges for the words it learns.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4 + list(corpus or ()), trainer=trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                    "pad_token": "<unk>"}, indent=2) + "\n"
    )
    return tokenizer.get_vocab_size()


def build_tiny_llama(
    directory: Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 4096,
    chat_template: bool = False,
    seed: int = 0,
    vocab_size: int = 1024,
    corpus: Sequence[str] | None = None,
) -> Path:
    """Write a random Llama-layout checkpoint (safetensors, fp32) with the demo tokenizer.

    head_dim must stay >= 32: vLLM's CPU attention refuses smaller heads.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = build_tokenizer(directory, vocab_size, corpus)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 8 // 3 // 8 * 8,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=PAD_TOKEN_ID,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if not sys.stderr.isatty():  # a progress bar off a terminal is `\r` noise in a log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    model.save_pretrained(directory, safe_serialization=True)
    # The demo model's own budget: short answers, the prompt keeps most of the context.
    write_generation_config(directory, max_new_tokens=256)
    if chat_template:
        add_chat_template(directory)
    return directory


def ensure_demo_model(cache_dir: Path) -> Path:
    """Build the demo checkpoint once (atomically) and return its directory."""
    target = Path(cache_dir) / f"demo-model-{DEMO_VERSION}"
    if not (target / "config.json").exists():
        logger.info("Building the tiny demo model in %s (its answers are noise).", target)
    return build_atomically(target, build_tiny_llama)

"""Checkpoint adapter: turn published HuatuoGPT2 checkpoints (Baichuan2, Yi) into Llama layout.

vLLM 0.32 serves neither published layout; both are Llama underneath. `huatuo convert` rewrites
the weights (streaming, one tensor at a time), the config and the tokenizer, and records every
transformation in `conversion.json`. See docs/convert.md.
"""

CONVERTER_VERSION = "1"

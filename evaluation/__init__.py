"""Medical evaluation through any OpenAI-compatible API (`huatuo eval`).

A middle layer: it talks HTTP to a server and imports nothing of this project except the
HuatuoGPT2 prompt format, in `evaluation.prompts` only.
"""

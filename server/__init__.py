"""huatuo-serve: the OpenAI-compatible gateway for HuatuoGPT2 on vLLM."""

__version__ = "0.1.0"

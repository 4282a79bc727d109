"""The HuatuoGPT2 models' own facts: prompt format, generation defaults, checkpoint metadata,
the tiny demo checkpoint. The bottom layer: it imports nothing else of this project, and the
gateway, the adapters, the load tests and the `huatuo` command all build on it."""

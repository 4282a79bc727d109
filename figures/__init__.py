"""Benchmark figures as files: each benchmark records its result, the docs render from them."""

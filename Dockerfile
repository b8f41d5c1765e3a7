# syntax=docker/dockerfile:1
# CaCE explanation service: multi-stage, CPU-only torch, non-root, with a healthcheck.
#
# The build stage runs scripts/setup.sh, the same script `make serve`/`make test` and CI run,
# so the image installs exactly what CI has tested. CPU torch comes from PyTorch's CPU index
# (a bare `torch` from PyPI would pull CUDA): pip prefers torch==2.13.0+cpu from there.
#   docker build -t cace:latest .
#   docker run -p 8000:8000 -v cace-data:/data -v /path/to/cebab:/data/cebab:ro cace:latest

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts/setup.sh scripts/setup.sh
COPY explainers explainers
COPY app app
# Optional extras baked into the image, e.g. --build-arg CACE_EXTRAS=ray,onnx (Ray worker pods need ray).
ARG CACE_EXTRAS=""
RUN bash scripts/setup.sh run

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    OMP_NUM_THREADS=2 \
    TOKENIZERS_PARALLELISM=false \
    CACE_HOST=0.0.0.0 \
    CACE_PORT=8000 \
    CACE_DATA_DIR=/data \
    CACE_DATASETS_DIR=/data/cebab \
    CACE_CACHE_DIR=/data/cache \
    CACE_LOG_FORMAT=json
RUN groupadd --system --gid 10001 cace \
 && useradd --system --uid 10001 --gid cace --home-dir /data --shell /usr/sbin/nologin cace \
 && mkdir -p /data && chown cace:cace /data
WORKDIR /app
COPY --from=build --chown=root:root /app /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CACE_PORT', '8000'), timeout=4)"]
CMD ["cace", "serve"]

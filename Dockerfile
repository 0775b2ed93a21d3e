# SymLoRA Lab for Hugging Face Spaces (Docker SDK) or any Docker host.
#   docker build -t symlora-lab .
#   docker run --rm -p 7860:7860 symlora-lab          # add --gpus all where there is a GPU
# Spaces run the container as uid 1000 and send traffic to app_port (7860, README front matter).

# Stage 1 builds the project's wheel (code + the shipped model, examples and results as the
# package symlora_assets) and installs it into /install laid out as a user site (what stage 2
# uses as ~/.local); the image takes only that folder: no source tree, build/ or *.egg-info.
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY requirements.lock .
RUN pip install --no-cache-dir "$(grep '^setuptools==' requirements.lock)"
COPY pyproject.toml README.md ./
COPY symlora symlora
COPY app app
COPY assets assets
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /dist . \
 && PYTHONUSERBASE=/install pip install --no-cache-dir --no-deps --user /dist/symlora-*.whl

# Stage 2: the runtime image.
FROM python:3.11-slim-bookworm

# Offline data the presets read: Debian's fortunes (text) and Fashion-MNIST (pretraining, benchmarks).
RUN apt-get update \
 && apt-get install -y --no-install-recommends fortunes dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SYMLORA_CACHE=/home/user/.cache/symlora \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
WORKDIR /home/user

# The exact runtime dependency set first (a layer that changes rarely; the test-only packages
# are in requirements-test.lock and stay out), then the project from stage 1.
COPY --chown=user requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --user --no-deps -r /tmp/requirements.lock
COPY --from=wheel --chown=user /install /home/user/.local

# First-use preparation at build time: the SmolLM2 GGUF → float32 conversion goes into
# $SYMLORA_CACHE (owned by uid 1000), so the first text run in a fresh container loads at once.
RUN python -m symlora.lab.prepare smollm2-135m

EXPOSE 7860
# The app closes itself on SIGTERM (app/__main__.py): `docker stop` takes well under a second.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "7860"]

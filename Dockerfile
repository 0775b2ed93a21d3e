# SymLoRA Lab for Hugging Face Spaces (Docker SDK) or any Docker host.
#   docker build -t symlora-lab .
#   docker run --rm -p 7860:7860 symlora-lab          # add --gpus all where there is a GPU
# Spaces run the container as uid 1000 and send traffic to app_port (7860, README front matter).
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
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
WORKDIR /home/user/app

# The exact, tested dependency set first (a layer that changes rarely), then the project.
COPY --chown=user requirements.lock .
RUN pip install --no-cache-dir --user --no-deps -r requirements.lock
COPY --chown=user . .
RUN pip install --no-cache-dir --user --no-deps --no-build-isolation .

EXPOSE 7860
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "7860"]

# One image for the API, the workers and the one-shot migration; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# the exact, hash-checked versions of everything the service and OpenVINO need (make lock writes the file);
# torch is its CPU build, from PyTorch's own index. Rebuilds reuse this layer until the lock changes.
COPY docker/requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock \
        --extra-index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY squeezer ./squeezer
# the package alone: its dependencies are the lock's; `pip check` fails the build if the two disagree
RUN pip install --no-deps . && pip check

# the service never runs as root; /data holds the artifact store
RUN useradd --create-home --uid 10001 squeezer && mkdir -p /data && chown squeezer /data
USER squeezer
ENV SQUEEZER_HOME=/data
EXPOSE 8000
CMD ["uvicorn", "--factory", "squeezer.api:create_app", "--host", "0.0.0.0", "--port", "8000"]

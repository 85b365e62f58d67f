# One image for the API, the workers and the one-shot migration; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY squeezer ./squeezer
# openvino: workers export OpenVINO IR and time the result in OpenVINO as well as onnxruntime
RUN pip install ".[openvino]"

# the service never runs as root; /data holds the artifact store
RUN useradd --create-home --uid 10001 squeezer && mkdir -p /data && chown squeezer /data
USER squeezer
ENV SQUEEZER_HOME=/data
EXPOSE 8000
CMD ["uvicorn", "--factory", "squeezer.api:create_app", "--host", "0.0.0.0", "--port", "8000"]

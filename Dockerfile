# Emotion Lens in a container: the page by default, the HTTP API on request, the bundled model
# inside (nothing is downloaded at start). See the README's "Container image" section.
#
#   docker build -t emotion-lens .
#   docker run -p 8501:8501 emotion-lens                                              # the page
#   docker run -p 8000:8000 emotion-lens python -m emotion serve --host 0.0.0.0       # the HTTP API
#
# Build arguments:
#   BASE_IMAGE             any image with Python 3.11 to 3.13 as `python3` and a working `python3 -m venv`
#   EXTRA_CA_CERTIFICATES  PEM text of certificates to trust while packages are downloaded (an HTTPS
#                          proxy's, say); empty by default. Only the build stage sees them: the image
#                          does not keep them.
# It builds with BuildKit and with the classic builder (DOCKER_BUILDKIT=0) alike.

ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG EXTRA_CA_CERTIFICATES=""
COPY requirements-serve.txt /tmp/
# Serving needs no TensorFlow (the model file carries its TensorFlow Lite runtime), so the image
# installs requirements-serve.txt, not requirements.txt; nothing installs packages at run time, so
# pip goes too.
RUN set -eu; \
    if [ -n "$EXTRA_CA_CERTIFICATES" ]; then \
        cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca-bundle.pem; \
        printf '%s\n' "$EXTRA_CA_CERTIFICATES" >> /tmp/ca-bundle.pem; \
        export PIP_CERT=/tmp/ca-bundle.pem; \
    fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
        -r /tmp/requirements-serve.txt; \
    /opt/venv/bin/python -m pip uninstall --yes --disable-pip-version-check pip setuptools

FROM ${BASE_IMAGE}
# The page listens on every interface (Streamlit reads STREAMLIT_* variables as its settings) and
# watches no files for changes; the detection log, when a visitor switches it on, goes to /data.
# The engine runs from the checkout in /app, on the path of every python (scripts/healthcheck.py's
# too), as `streamlit run app.py` runs it; its model files are /app/model's.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    HISTORY_PATH=/data/detections.duckdb
RUN useradd --create-home --uid 1000 --user-group emotion \
    && mkdir /data \
    && chown emotion:emotion /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The whole checkout but what .dockerignore leaves out (tests, data, secrets, git history).
COPY . /app
USER emotion
EXPOSE 8501 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]
CMD ["streamlit", "run", "app.py"]

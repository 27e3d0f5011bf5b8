# The tiergate image: the gateway (`tiergate serve`) and the simulated engines (`tiergate simulate`).
#   docker build -t tiergate .
#   docker run -v $PWD/tiergate.yaml:/etc/tiergate/tiergate.yaml:ro -p 8000:8000 tiergate
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY engines ./engines
COPY pricing ./pricing
RUN pip install . \
    && groupadd --system --gid 10001 tiergate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tiergate --shell /usr/sbin/nologin tiergate \
    && mkdir -p /var/lib/tiergate /etc/tiergate \
    && chown tiergate:tiergate /var/lib/tiergate \
    && cd / && rm -rf /src

# the ledger journal (ledger.journal_dir) and any relative path in the config live here: mount a volume
WORKDIR /var/lib/tiergate
USER 10001:10001
EXPOSE 8000
ENV TIERGATE_CONFIG=/etc/tiergate/tiergate.yaml
CMD ["tiergate", "serve", "--config", "/etc/tiergate/tiergate.yaml"]

# One image for every Accrue process: `accrue api`, `accrue worker`, `accrue migrate` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package build needs; tests, docs and local virtualenvs stay out of the image.
COPY pyproject.toml README.md settings.py worker.py ./
COPY accrue ./accrue
COPY api ./api
COPY activities ./activities
COPY db ./db
COPY domain ./domain
COPY integrations ./integrations
COPY workflows ./workflows
RUN pip install . && rm -rf /app/build

# The processes are stateless: nothing is written inside the container, so it runs unprivileged.
RUN useradd --system --uid 10001 --no-create-home accrue
USER accrue

# Containers must listen on all interfaces; compose sets the same value explicitly.
ENV ACCRUE_API_HOST=0.0.0.0
EXPOSE 8000
ENTRYPOINT ["accrue"]
CMD ["api"]

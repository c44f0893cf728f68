// `smyrf methods`: every registered method form and its capabilities (smyrf/registry.h).
#pragma once

namespace smyrf::cli {

// A table on stdout; with json, a JSON list of objects {name, form, config, specs, summary,
// and one boolean per capability}.
int run_methods(bool json);

}  // namespace smyrf::cli

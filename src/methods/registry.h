// Every method's registration, one line each. The API edge (src/api/) dispatches over
// MethodConfig with Method<Config>; smyrf::methods() lists the forms in this order.
#pragma once

#include "methods/reference/registration.h"
#include "methods/dense/registration.h"
#include "methods/smyrf/registration.h"
#include "methods/reformer/registration.h"
#include "methods/clustered/registration.h"
#include "methods/routing/registration.h"
#include "methods/sparse/registration.h"
#include "methods/linear/registration.h"
#include "methods/compressed/registration.h"
#include "methods/informer/registration.h"
#include "methods/sinkhorn/registration.h"
#include "methods/synthesizer/registration.h"

#include "reference/clustered_reference.h"

#include "reference/sparse_reference.h"

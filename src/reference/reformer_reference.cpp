#include "reference/reformer_reference.h"

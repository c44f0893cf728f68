#include "reference/routing_reference.h"

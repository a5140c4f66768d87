// The kernels for any CPU: the portable templates, compiled with the build's flags.
#include "cellsynth/prelude.hpp"

#define CELLSYNTH_ISA portable
#include "cellsynth/kernels.hpp"
#include "cellsynth/isa_table.hpp"

// dd2ctl: see cluster/ctl.h.
#include "cluster/ctl.h"

int main(int argc, char** argv) { return dd2::RunCtl(argc, argv); }

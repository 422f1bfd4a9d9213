"""Print an OpenBLAS kernel other than the one numpy runs here, that this CPU also runs, or nothing.

`make test` runs the numeric core's tests a second time under it (OPENBLAS_CORETYPE), so a
result that holds under one kernel's rounding only shows up. Nothing is printed where the
environment already pins a kernel (OPENBLAS_CORETYPE set: some machines need it to compute
correctly), where numpy's BLAS is not OpenBLAS, or where no older kernel is known.
"""

import os

# Each kernel, and an older one that every CPU able to run it can run too.
OLDER = {
    "sapphirerapids": "SkylakeX", "cooperlake": "SkylakeX", "skylakex": "Haswell", "zen": "Sandybridge",
    "haswell": "Sandybridge", "sandybridge": "Nehalem", "neoversev2": "ARMV8", "neoversev1": "ARMV8",
    "neoversen2": "ARMV8", "neoversen1": "ARMV8", "cortexa57": "ARMV8",
}


def main():
    if os.environ.get("OPENBLAS_CORETYPE"):
        return
    import numpy  # noqa: F401  (loads the BLAS that threadpoolctl then reports)
    import threadpoolctl

    for info in threadpoolctl.threadpool_info():
        if info.get("internal_api") == "openblas":
            other = OLDER.get(str(info.get("architecture", "")).lower())
            if other:
                print(other)
            return


if __name__ == "__main__":
    main()

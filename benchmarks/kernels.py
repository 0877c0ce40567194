"""Kernel benchmark: ``python benchmarks/kernels.py [--quick]`` (same as ``codecut bench kernels``).

Writes ``benchmarks/results/kernels_<device>.json`` and ``.md``; see ``codecut.kernels.bench``.
"""

import argparse
import logging

import pandas as pd
from codecut.kernels.bench import run
from common import RESULTS

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only the target shape")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    df = run(quick=args.quick, out_dir=RESULTS)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(df.drop(columns=["device"]).round(4).to_string(index=False))

"""Fail the install if the CPU-only environment pulled in CUDA packages, triton or torchvision."""

import sys
from importlib import metadata

import torch

FORBIDDEN = ("torchvision", "torch-fidelity", "triton")
installed = {d.metadata["Name"].lower() for d in metadata.distributions()}
bad = sorted(n for n in installed if n in FORBIDDEN or n.startswith("nvidia-"))
problems = []
if bad:
    problems.append(f"forbidden packages in the default install: {', '.join(bad)}")
if torch.__version__ != "2.13.0+cpu":
    problems.append(f"torch is {torch.__version__}, expected the local CPU wheel 2.13.0+cpu")
if problems:
    sys.exit("install check failed: " + "; ".join(problems) + " (install with -c constraints.txt and find-links)")
print(f"install check: torch {torch.__version__}, no CUDA packages, no torchvision")

#!/usr/bin/env bash
# README command 1: create .venv, install lrdoctor with its dev extras, run it on sample_logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# The CPU wheel of torch first: a plain 'torch' requirement may pull a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[dev]'
.venv/bin/lrdoctor diagnose sample_logs/

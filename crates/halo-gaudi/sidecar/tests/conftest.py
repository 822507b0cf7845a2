"""Shared fixtures: the sidecar package on sys.path, the tiny reference model and its golden ids."""

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MODEL_DIR = os.environ.get("HALO_TINY_MODEL", "/work/shared/models/tiny-mha")


@pytest.fixture(scope="session")
def model_dir():
    assert os.path.isfile(os.path.join(MODEL_DIR, "config.json")), (
        f"tiny reference model not found at {MODEL_DIR} (set HALO_TINY_MODEL)"
    )
    return MODEL_DIR


@pytest.fixture(scope="session")
def golden(model_dir):
    with open(os.path.join(model_dir, "golden.json"), encoding="utf-8") as f:
        return json.load(f)["cases"]

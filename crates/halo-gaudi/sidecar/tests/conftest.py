"""Shared fixtures: the sidecar package on sys.path, the tiny reference model and its golden ids."""

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

def _tiny_model_dir() -> str:
    """$HALO_TINY_MODEL, else the shared models next to the clone, else $HALO_SHARED_DIR's."""
    if os.environ.get("HALO_TINY_MODEL"):
        return os.environ["HALO_TINY_MODEL"]
    repo = os.path.normpath(os.path.join(HERE, "..", "..", "..", ".."))
    local = os.path.join(os.path.dirname(repo), "shared", "models", "tiny-mha")
    if os.path.isfile(os.path.join(local, "config.json")) or not os.environ.get("HALO_SHARED_DIR"):
        return local
    return os.path.join(os.environ["HALO_SHARED_DIR"], "models", "tiny-mha")


MODEL_DIR = _tiny_model_dir()


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

"""A sidecar that lies: the real sidecar, except that Step replies are corrupted as
HALO_FAKE_MODE says. Used only by halo-gaudi's tests of reply validation."""

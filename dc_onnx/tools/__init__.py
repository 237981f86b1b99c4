"""Tools that run models: verify, eval, bench, and the way back to a dense model."""

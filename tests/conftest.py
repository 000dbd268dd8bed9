"""Shared test set-up."""

import gc
import warnings

# TorchServe's package leaves ts/version.txt open when first imported; import it once here, with that one warning
# silenced, so that pytest's warnings-as-errors stays strict for everything else.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    try:
        import ts.metrics.dimension  # noqa: F401
        import ts.version  # noqa: F401
    except ImportError:
        pass
    gc.collect()

from tests.redisserver import redis_server  # noqa: E402, F401 (a fixture: a private redis-server, always stopped)

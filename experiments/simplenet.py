"""SimpleNet on breast cancer: the default experiment (same as `jaxdl train`).

    jaxdl train --config experiments/simplenet.py --workdir /tmp/simplenet

The config lives in the package (``jaxdl/default_config.py``) so that an installed
`jaxdl train` finds it without this repository; this file is its public name.
"""

from jaxdl.experiment.default_config import get_config

__all__ = ["get_config"]

"""The Kubeflow side of xdc: components (``xdc_kfp.components``), pipelines (``xdc_kfp.pipelines``)
and what the ``xdc pipeline`` command does with them (``xdc_kfp.runner``).

This module and :mod:`xdc_kfp.placement` do not import kfp, so the command line can show their
defaults in its help without the pipelines extra; everything else does.
"""

from xdc_core import __version__

# The GPU image, docker/Dockerfile's default flavour, as .github/workflows/images.yml publishes it for
# each version (docker/README.md).
DEFAULT_IMAGE = f"ghcr.io/xdc-project/xdc:{__version__}-gpu"

"""The ``xdc`` command line: one parser over the library (``xdc_core``) and, imported only when a
``pipeline`` command asks for it, the Kubeflow package (``xdc_kfp``)."""

"""The Kubeflow pipelines of xdc: XDC pretraining and the UCF101 split-1 evaluation."""

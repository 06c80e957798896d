"""The Kubeflow pipelines of xdc: XDC pretraining (``xdc_pretrain``) and the UCF101 split-1
evaluation (``ucf101_eval``), and how their tasks are placed on a cluster (``placement``)."""

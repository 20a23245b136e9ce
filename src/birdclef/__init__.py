"""BirdCLEF training pipeline: configs choose data, timm backbone and loss; one fit loop; macro ROC-AUC."""

__version__ = "0.1.0"

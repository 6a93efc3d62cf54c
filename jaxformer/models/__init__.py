"""Models: NNX modules that hold parameters and call the kernels."""

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import ATTENTION_KERNELS, Encoder, EncoderOutput
from jaxformer.models.heads import SequenceClassifier, classification_loss

__all__ = ["ATTENTION_KERNELS", "Encoder", "EncoderConfig", "EncoderOutput", "SequenceClassifier",
           "classification_loss"]

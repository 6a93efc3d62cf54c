"""Models: NNX modules that hold parameters and call the kernels."""

from jaxformer.models.attention_kernels import (ATTENTION_KERNELS, attention_path, bind_attention,
                                                register_attention)
from jaxformer.models.block_stack import BlockStack
from jaxformer.models.config import PRECISION_POLICIES, EncoderConfig
from jaxformer.models.encoder import Encoder, EncoderOutput
from jaxformer.models.heads import SequenceClassifier, classification_loss
from jaxformer.models.theseus import TheseusClassifier, successor_classifier, truncate_encoder

__all__ = ["ATTENTION_KERNELS", "BlockStack", "Encoder", "EncoderConfig", "EncoderOutput",
           "PRECISION_POLICIES", "SequenceClassifier", "attention_path", "bind_attention",
           "TheseusClassifier", "classification_loss", "register_attention",
           "successor_classifier", "truncate_encoder"]

"""mmsent: multimodal (text + image, any subset of modalities) sentiment scoring.

Importing this package starts nothing: no Ray, no model load, no network.

    from mmsent.predictor import Predictor
    Predictor.load().predict([{"text": "I love this!"}])
"""

__version__ = "0.1.0"

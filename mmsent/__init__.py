"""mmsent: multimodal (text + image, any subset of modalities) sentiment scoring.

Importing this package starts nothing: no Ray, no model load, no network.

    from mmsent.predictor import Predictor
    predictor = Predictor()  # the shipped default model; Predictor("runs/x/best") for another
    predictor.predict([{"text": "I love this!"}])  # [{"label": "positive", "scores": {...}, ...}]
    predictor.predict([{"text": "Nice", "image": open("cat.jpg", "rb").read()}])
"""

__version__ = "0.1.0"

"""Training: the network, its augmentation, the training data, training and evaluation.

Imports Keras (and, to write the shipped runtime, TensorFlow) where it needs them. The serving
path (emotion's other modules, app.py) never imports this package.
"""

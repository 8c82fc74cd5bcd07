"""The one source of truth for what the model sees and what it says."""

# FER2013's own label order: index i of every probability vector is EMOTIONS[i].
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

FACE_SIZE = 48  # pixels; faces are square grayscale crops of this side

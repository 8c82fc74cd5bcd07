// The twin of emotion/labels.py: FER2013's label order and the crops' side.
export const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
export const FACE_SIZE = 48; // pixels; faces are square grayscale crops of this side

"""TokenSentry pipeline: source -> parse -> identify -> window -> detect -> decide -> sink -> commit."""

__version__ = "0.1.0"

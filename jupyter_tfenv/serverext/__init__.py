"""The jupyter_server extension: TensorFlow images as kernels, and a REST API for images."""

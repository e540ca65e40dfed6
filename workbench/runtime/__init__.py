"""The runtime: executors per backend, KV caches, the generation session, the sampler.

Importing it registers the torch executor as the graph runner of the builder's quantization
passes (calibration.py): calibrating runs the network, and the builder may not import the runtime.
"""

from workbench.runtime import calibration  # noqa: F401  (registers the graph runner)

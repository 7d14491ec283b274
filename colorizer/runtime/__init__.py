"""The runtime seam: every way into the program resolves a device, a backend and a model here, once.

``colorize``, ``eval``, ``colorizer-export``, the demo, the OpenVINO functional gate, the service and the
benchmarks all stand on these three modules; none of them re-implements what is here.

- ``colorizer.runtime.device``: ``resolve_device("auto" | "cpu" | "cuda" | "cuda:1")`` and the one
  ``"auto"`` backend policy, ``resolve_backend(kernels, device)``.
- ``colorizer.runtime.runner``: the ``Runner`` interface, ``runner.colorize(sketches, palettes, seeds)``
  for a batch with one seed per picture, and its two kinds: ``ModuleRunner`` (a torch generator on any op
  backend) and ``EngineRunner`` (an exported engine of any format in ``colorizer.export.formats``).
- ``colorizer.runtime.load``: ``resolve_model(ref)`` turns what a user names (a bundled model's name, a
  training run folder, a checkpoint file, an exported engine) into a ``ModelRef``;
  ``load_runner(ref, device, kernels)`` into a Runner; ``load_colorizer(ref)`` into the eager generator
  (what the exporters and the demo start from).

Layers: ``device`` and ``runner`` sit below ``colorizer.export`` (the exporters' gates use a
ModuleRunner); ``load`` sits above it (it reads the formats table). The package's ``__init__`` imports
neither, so importing the low half never pulls in the exporters. Limits (seed range, size multiple,
largest side) are ``colorizer.limits``.
"""

"""``colorizer serve``: colorization over HTTP, with dynamic batching, metrics and a page for artists.

- ``colorizer.serve.app``: ``create_app(runner, ServeSettings(...))``, the FastAPI application;
- ``colorizer.serve.batcher``: ``Batcher``, requests of one model size run as one batch, off the event loop;
- ``colorizer.serve.policy``: the default ``--max-batch`` and batch shape per device and format, and why;
- ``colorizer.serve.cli``: the ``colorizer serve`` options and command;
- ``colorizer/serve/static/``: the page at ``/`` (plain HTML, CSS and JavaScript; no build step).

The package needs the ``serve`` extra (``pip install colorizer[serve]``: fastapi, uvicorn,
python-multipart, prometheus-client). Importing this package imports none of them.
"""

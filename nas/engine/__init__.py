"""The search engine: the settings of a search, the driver that is the study's only writer, the samplers,
the early-stopping schedulers, the Ray Tune backend and the trial body a worker runs (docs/design.md,
"Layers"). It sits above the study layer (:mod:`nas.study`) and below the CLI; nothing below imports it.

Nothing Ray pickles holds an object vitnas does not own: Ray gets plain data and handles
(:mod:`nas.engine.ray_backend`).
"""

"""The recipe runner's stages, one module each: what a stage reads, what it writes and which cache folder it owns.

- :mod:`.loading`: the model, sampling backend and judge a recipe names.
- :mod:`.prompts`: a recipe's prompt sources split into train / selection / test, and its sampling settings.
- :mod:`.folders`: fingerprints, resumable stage folders (moved aside when their inputs change), wall times.
- :mod:`.directions`: score the training prompts, collect activations, fit and diagnose one direction per block
  (``train_scores/``, ``directions/``, ``diagnostics/``).
- :mod:`.condition`: the gate's condition direction, block and threshold.
- :mod:`.choice`: the sweep of layers × α on the selection half (``selection/``).
- :mod:`.report`: the chosen adapter evaluated on the test half, with and without its gate, and saved
  (``evaluation/``, ``evaluation_ungated/``, ``adapter/``, ``summary.json``, ``report.md``); the runner writes
  ``timings.json``, also for a run that fails.

:func:`steering_adapter.run.pipeline.run_recipe` runs them in order.
"""

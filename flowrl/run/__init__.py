"""A run folder and every file in it: names (:mod:`~flowrl.run.files`), ownership (:mod:`~flowrl.run.folder`),
checkpoints, metrics, the config as data, provenance and the W&B mirror. Nothing else in flowrl names a run's file."""

"""One run's life: its options, its session (open, execute, close), its directory, the files it appends to and
its scratch indexes. Nothing is imported here, so that reading a constant of `run.rundir` loads no executor."""

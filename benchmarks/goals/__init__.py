"""The benchmark's goals, one module each; each module's `measure` returns a `harness.Outcome`: its figures,
every one against a baseline measured in the same run, and whether it met its goal."""

"""Out-of-band change detection: per-target baselines and the sweep that reads
every due target and reports what changed behind changegate's back."""

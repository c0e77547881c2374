"""Hardware: chiplets, packages and their levels, memory stacks, presets, the TOML reader, power/area/cost."""

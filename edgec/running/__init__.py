"""Running models outside the stages: batched inference, benchmarks and profiles, session tuning, emulated aarch64,
and the standalone device runner."""

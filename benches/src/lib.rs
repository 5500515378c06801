//! Strata's benchmarks: criterion micro-benchmarks in `benches/` and end-to-end comparisons
//! against DuckDB in `e2e/`. See `README.md` for how to run them and the measured numbers.

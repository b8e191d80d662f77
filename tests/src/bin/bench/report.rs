//! Printing: a figure beside its target, percentiles, units.

use std::path::PathBuf;
use std::time::Duration;

pub fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

/// `full` iterations, or a tenth of them (at least 3) in a quick run.
pub fn n(full: usize) -> usize {
    if quick() { (full / 10).max(3) } else { full }
}

/// One figure: its name, its value, the target and whether it is met (`None`: no target).
pub fn row(name: &str, value: String, target: &str, ok: Option<bool>) {
    let verdict = match ok {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "",
    };
    println!("  {name:<58} {value:>12}   target {target:<12} {verdict}");
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| e2e::moto::workspace_root().join("target"))
}

/// The build profile measured: `release` (what is deployed), or `BENCH_PROFILE` (`profiling`:
/// the same with symbols, for `perf`).
pub fn profile() -> String {
    std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "release".to_string())
}

/// A binary of the measured build (`scripts/bench.sh` builds them first).
pub fn release_binary(name: &str) -> PathBuf {
    let p = target_dir().join(profile()).join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/bench.sh (it builds the release binaries)",
        p.display()
    );
    p
}

//! The benchmark: prints every figure beside its target. Run it with `scripts/bench.sh`, which
//! builds the release binaries, installs the Python peer's runtime and provides the moto server.
//!
//! - sizes of what is deployed (`sizes`);
//! - upstream calls per request (`upstream`);
//! - what Lambda bills, per function and beside a Python peer and an echo floor (`billing`).
//!
//! `BENCH_QUICK=1` runs a tenth of the iterations (a smoke run, figures less stable).

mod billing;
mod report;
mod sizes;
mod upstream;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!(
        "benchmark{}",
        if report::quick() {
            " (quick: a tenth of the iterations)"
        } else {
            ""
        }
    );
    if std::env::var_os("BENCH_ONLY").is_none() {
        sizes::sizes();
        upstream::upstream_calls().await;
    }
    billing::run().await;
}
